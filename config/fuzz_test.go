package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParse: any bytes given as a config either load or fail with
// Problems, each placed at a line and column, and never panic or hang.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testdata/full.hcl", "../config.hcl"} {
		if src, err := os.ReadFile(name); err == nil {
			f.Add(src)
		}
	}
	for _, s := range []string{
		"",
		"listen = \"127.0.0.1:8080\"\napp \"web\" { command = [\"x\", \"{port}\"] }\n",
		"app \"web\" { command = [\"x\", \"{port}\", \"{socket}\"] }\n",
		"app \"web\" {\n command = [\"x\"]\n instances = 0\n autoscale { min = 3 max = 1 }\n}\n",
		"admin { token = \"short\" }\n",
		"proxy { buffering { request_memory = \"1ZiB\" } }\n",
		"app \"a\" {\n command = [\"x\", \"{port}\"]\n recycle { max_memory = \"-1MiB\" max_age = \"0s\" }\n}\n",
		"app { }\n\"\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, src []byte) {
		var cfg *Config
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			cfg, err = Parse(src, filepath.Join(dir, "config.hcl"))
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("loading %q took over 10 s", src)
		}
		if err == nil {
			if cfg == nil {
				t.Fatal("no config and no error")
			}
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error %T %q is not a list of problems", err, err)
		}
		for _, p := range ps {
			if p.Line < 1 || p.Column < 1 || p.File == "" {
				t.Fatalf("problem without a position: %+v", p)
			}
		}
	})
}

// FuzzCompare: for any two configs that load, the diff a reload acts on
// misses nothing and makes nothing up. Compared with itself (or with the
// same text loaded again) a config has no changes; a diff is empty only
// when the two configs are equal field by field (so no edit is ever
// ignored by a reload); the diff the other way round is its mirror; an app
// restarts exactly when its processes would differ, and scales exactly when
// its instances changed.
func FuzzCompare(f *testing.F) {
	base := "listen = \"127.0.0.1:8080\"\napp \"web\" {\n command = [\"x\", \"{port}\"]\n instances = 2\n}\n"
	for _, pair := range [][2]string{
		{base, base},
		{base, strings.Replace(base, "instances = 2", "instances = 3", 1)},
		{base, strings.Replace(base, "instances = 2", "instances = 2\n env = { A = \"1\" }", 1)},
		{base, strings.Replace(base, "instances = 2", "instances = 2\n health { path = \"/h\" }", 1)},
		{base, strings.Replace(base, "instances = 2", "instances = 2\n recycle { max_requests = 5 }", 1)},
		{base, strings.Replace(base, "instances = 2", "instances = 2\n autoscale {\n min = 1\n max = 4\n}", 1)},
		{base, base + "app \"api\" {\n command = [\"y\", \"{port}\"]\n path_prefix = \"/api\"\n}\n"},
		{base, "log { level = \"debug\" }\n" + base},
		{base, "proxy { buffering { request_memory = \"2MiB\" } }\n" + base},
		{base, "admin { listen = \"127.0.0.1:9999\"\n hosts = [\"a.test\"] }\n" + base},
		{base, "worker_ports = \"20000-20100\"\n" + base},
		{base, "shutdown { timeout = \"5s\" }\n" + base},
	} {
		f.Add([]byte(pair[0]), []byte(pair[1]))
	}
	if src, err := os.ReadFile("testdata/full.hcl"); err == nil {
		f.Add(src, src)
	}
	dir := f.TempDir()
	name := filepath.Join(dir, "config.hcl")
	f.Fuzz(func(t *testing.T, srcA, srcB []byte) {
		a, err := Parse(srcA, name)
		if err != nil {
			return
		}
		again, _ := Parse(srcA, name)
		if d := Compare(a, again); !d.Empty() || d.String() != "no changes" {
			t.Fatalf("the same text loaded twice differs: %s", d)
		}
		b, err := Parse(srcB, name)
		if err != nil {
			return
		}
		d, back := Compare(a, b), Compare(b, a)
		_ = d.String()
		if d.Empty() != back.Empty() {
			t.Fatalf("a->b empty %v, b->a empty %v", d.Empty(), back.Empty())
		}
		if diff := unequal("config", reflect.ValueOf(*a), reflect.ValueOf(*b)); d.Empty() && diff != "" {
			t.Fatalf("no changes reported, but %s differs", diff)
		}
		if !slices.Equal(d.Added, back.Removed) || !slices.Equal(d.Removed, back.Added) {
			t.Fatalf("added %v removed %v; the other way added %v removed %v", d.Added, d.Removed, back.Added, back.Removed)
		}
		if len(d.Changed) != len(back.Changed) {
			t.Fatalf("changed %v; the other way %v", d.Changed, back.Changed)
		}
		old := map[string]*App{}
		for _, app := range a.Apps {
			old[app.Name] = app
		}
		changed := map[string]AppDiff{}
		for _, ad := range d.Changed {
			changed[ad.Name] = ad
			for _, k := range ad.Fields {
				if !strings.HasPrefix(k, "app."+ad.Name+".") {
					t.Fatalf("app %s: changed key %q", ad.Name, k)
				}
			}
		}
		for _, app := range b.Apps {
			prev, ok := old[app.Name]
			if !ok {
				continue
			}
			ad, listed := changed[app.Name]
			if diff := unequal("app", reflect.ValueOf(*prev), reflect.ValueOf(*app)); listed != (diff != "") {
				t.Fatalf("app %s: listed as changed %v (%v), but field by field: %q", app.Name, listed, ad.Fields, diff)
			}
			if ad.Restart != !prev.ProcessEqual(app) {
				t.Fatalf("app %s: restart %v, processes equal %v", app.Name, ad.Restart, prev.ProcessEqual(app))
			}
			if ad.Scale != (prev.Instances != app.Instances) || ad.Scale && (ad.From != prev.Instances || ad.To != app.Instances) {
				t.Fatalf("app %s: scale %v %d->%d, instances %d->%d", app.Name, ad.Scale, ad.From, ad.To, prev.Instances, app.Instances)
			}
		}
	})
}

// unequal names the first field where a and b differ ("" when none), with
// nil and empty slices and maps equal (both mean none), apps matched by
// name (their order in the file routes nothing), and Path ignored.
func unequal(at string, a, b reflect.Value) string {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() == b.IsNil() {
				return ""
			}
			return at
		}
		return unequal(at, a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			field := a.Type().Field(i)
			if field.Name == "Path" && a.Type() == reflect.TypeFor[Config]() {
				continue
			}
			if field.Name == "Apps" {
				if d := unequalApps(a.Field(i).Interface().([]*App), b.Field(i).Interface().([]*App)); d != "" {
					return at + "." + d
				}
				continue
			}
			if d := unequal(at+"."+field.Name, a.Field(i), b.Field(i)); d != "" {
				return d
			}
		}
		return ""
	case reflect.Slice, reflect.Map:
		if a.Len() == 0 && b.Len() == 0 {
			return ""
		}
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return at
	}
	return ""
}

func unequalApps(a, b []*App) string {
	if len(a) != len(b) {
		return "Apps"
	}
	byName := map[string]*App{}
	for _, app := range b {
		byName[app.Name] = app
	}
	for _, app := range a {
		other, ok := byName[app.Name]
		if !ok {
			return "Apps"
		}
		if d := unequal("app."+app.Name, reflect.ValueOf(*app), reflect.ValueOf(*other)); d != "" {
			return d
		}
	}
	return ""
}
