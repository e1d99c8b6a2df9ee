package config

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// Compare reports what changed from old to new. It is a pure function:
// neither config is modified.
func Compare(old, new *Config) Diff {
	d := Diff{
		LogChanged:    old.Log != new.Log,
		ListenChanged: old.Listen != new.Listen,
		AdminChanged:  old.Admin.Listen != new.Admin.Listen,
		AccessChanged: !old.Admin.AccessEqual(new.Admin),
		ProxyChanged: !reflect.DeepEqual(old.Proxy, new.Proxy) ||
			old.Shutdown != new.Shutdown || old.WorkerPorts != new.WorkerPorts,
	}
	oldApps := make(map[string]*App, len(old.Apps))
	for _, a := range old.Apps {
		oldApps[a.Name] = a
	}
	newApps := make(map[string]bool, len(new.Apps))
	for _, a := range new.Apps {
		newApps[a.Name] = true
		prev, ok := oldApps[a.Name]
		if !ok {
			d.Added = append(d.Added, a.Name)
			continue
		}
		if ad := compareApp(prev, a); len(ad.Fields) > 0 {
			d.Changed = append(d.Changed, ad)
		}
	}
	for _, a := range old.Apps {
		if !newApps[a.Name] {
			d.Removed = append(d.Removed, a.Name)
		}
	}
	return d
}

// processKeys are the app keys whose change needs new processes.
var processKeys = []string{"command", "dir", "env", "user", "group", "serve"}

func compareApp(old, new *App) AppDiff {
	d := AppDiff{Name: new.Name, Restart: !old.ProcessEqual(new)}
	prefix := "app." + new.Name
	d.Fields = changedKeys(prefix, reflect.TypeFor[rawApp](), reflect.ValueOf(*old), reflect.ValueOf(*new), nil)
	for _, key := range d.Fields {
		switch top, _, _ := strings.Cut(strings.TrimPrefix(key, prefix+"."), "."); {
		case top == "instances":
			d.Scale, d.From, d.To = true, old.Instances, new.Instances
		case !slices.Contains(processKeys, top):
			d.Settings = true
		}
	}
	return d
}

// changedKeys appends the dotted keys of the fields that differ between the
// structs a and b; raw is the matching raw* type, whose hcl tags name the keys,
// so the keys are exactly what the user writes in the file.
func changedKeys(prefix string, raw reflect.Type, a, b reflect.Value, out []string) []string {
	for i := range a.NumField() {
		field := a.Type().Field(i)
		rawField, ok := raw.FieldByName(field.Name)
		if !ok {
			continue // not a setting (the app's name is its block label)
		}
		key := prefix + "." + strings.Split(rawField.Tag.Get("hcl"), ",")[0]
		fa, fb := a.Field(i), b.Field(i)
		rawType := rawField.Type
		if rawType.Kind() == reflect.Pointer {
			rawType = rawType.Elem()
		}
		switch {
		case fa.Kind() == reflect.Struct && rawType.Kind() == reflect.Struct:
			out = changedKeys(key, rawType, fa, fb, out)
		case fa.Kind() == reflect.Pointer && !fa.IsNil() && !fb.IsNil():
			out = changedKeys(key, rawType, fa.Elem(), fb.Elem(), out)
		case !same(fa, fb):
			out = append(out, key)
		}
	}
	return out
}

// same is reflect.DeepEqual, except that nil and empty slices and maps are
// equal: both mean "none" in a config.
func same(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice, reflect.Map:
		if a.Len() == 0 && b.Len() == 0 {
			return true
		}
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// ProcessEqual reports whether a and b start identical processes: command,
// dir, env, user, group and serve are equal. When false, a rolling restart
// is needed.
func (a *App) ProcessEqual(b *App) bool {
	return slices.Equal(a.Command, b.Command) && a.Dir == b.Dir && maps.Equal(a.Env, b.Env) &&
		a.User == b.User && a.Group == b.Group && a.Background == b.Background
}

// Empty reports whether nothing changed.
func (d Diff) Empty() bool {
	return !d.LogChanged && !d.ListenChanged && !d.AdminChanged && !d.AccessChanged && !d.ProxyChanged &&
		len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0
}

// String summarises the diff for a log line, e.g.
// "web: 2 -> 4 instances; api: rolling restart (env); app added: admin; log settings".
func (d Diff) String() string {
	if d.Empty() {
		return "no changes"
	}
	var parts []string
	for _, ad := range d.Changed {
		parts = append(parts, ad.String())
	}
	for _, name := range d.Added {
		parts = append(parts, "app added: "+name)
	}
	for _, name := range d.Removed {
		parts = append(parts, "app removed: "+name)
	}
	for _, flag := range []struct {
		set  bool
		what string
	}{
		{d.ListenChanged, "listen address"},
		{d.AdminChanged, "admin listen address"},
		{d.AccessChanged, "admin access (token, hosts)"},
		{d.ProxyChanged, "proxy settings"},
		{d.LogChanged, "log settings"},
	} {
		if flag.set {
			parts = append(parts, flag.what)
		}
	}
	return strings.Join(parts, "; ")
}

// String summarises one app's changes, e.g. "api: rolling restart (env), 2 -> 4 instances".
func (d AppDiff) String() string {
	prefix := "app." + d.Name + "."
	var restart, settings []string
	for _, key := range d.Fields {
		short := strings.TrimPrefix(key, prefix)
		top, _, _ := strings.Cut(short, ".")
		switch {
		case slices.Contains(processKeys, top):
			restart = append(restart, short)
		case top != "instances":
			settings = append(settings, short)
		}
	}
	var what []string
	if d.Restart {
		what = append(what, fmt.Sprintf("rolling restart (%s)", strings.Join(restart, ", ")))
	}
	if d.Scale {
		what = append(what, fmt.Sprintf("%d -> %d instances", d.From, d.To))
	}
	if d.Settings {
		what = append(what, fmt.Sprintf("settings (%s)", strings.Join(settings, ", ")))
	}
	return d.Name + ": " + strings.Join(what, ", ")
}
