package config

import (
	"net/netip"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

const compareBase = `
app "web" {
  command   = ["./web", "{port}"]
  env       = { A = "1" }
  instances = 2
  hosts     = ["example.com"]
  health {
    interval = "2s"
  }
}
app "api" {
  command   = ["./api"]
  instances = 2
}
`

// baseConfig parses compareBase afresh, so each call returns an independent copy.
func baseConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := Parse([]byte(compareBase), filepath.Join(t.TempDir(), "config.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestCompare(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		want Diff
		str  string
	}{
		{"unchanged", func(c *Config) {}, Diff{}, "no changes"},
		{"empty env equals nil env", func(c *Config) { c.Apps[1].Env = nil }, Diff{}, "no changes"},
		{"scale", func(c *Config) { c.Apps[0].Instances = 4 },
			Diff{Changed: []AppDiff{{Name: "web", Scale: true, From: 2, To: 4, Fields: []string{"app.web.instances"}}}},
			"web: 2 -> 4 instances"},
		{"env needs restart", func(c *Config) { c.Apps[0].Env = map[string]string{"A": "2"} },
			Diff{Changed: []AppDiff{{Name: "web", Restart: true, Fields: []string{"app.web.env"}}}},
			"web: rolling restart (env)"},
		{"command needs restart", func(c *Config) { c.Apps[1].Command = []string{"./api", "-v"} },
			Diff{Changed: []AppDiff{{Name: "api", Restart: true, Fields: []string{"app.api.command"}}}},
			"api: rolling restart (command)"},
		{"dir user group need restart", func(c *Config) { c.Apps[1].Dir, c.Apps[1].User, c.Apps[1].Group = "/srv", "u", "g" },
			Diff{Changed: []AppDiff{{Name: "api", Restart: true, Fields: []string{"app.api.dir", "app.api.user", "app.api.group"}}}},
			"api: rolling restart (dir, user, group)"},
		{"nested setting", func(c *Config) { c.Apps[0].Health.Interval = 5 * time.Second },
			Diff{Changed: []AppDiff{{Name: "web", Settings: true, Fields: []string{"app.web.health.interval"}}}},
			"web: settings (health.interval)"},
		{"output bounds apply in place", func(c *Config) { c.Apps[0].Output.LinesPerSecond = 50 },
			Diff{Changed: []AppDiff{{Name: "web", Settings: true, Fields: []string{"app.web.output.lines_per_second"}}}},
			"web: settings (output.lines_per_second)"},
		{"health removed", func(c *Config) { c.Apps[0].Health = nil },
			Diff{Changed: []AppDiff{{Name: "web", Settings: true, Fields: []string{"app.web.health"}}}},
			"web: settings (health)"},
		{"struct settings", func(c *Config) {
			c.Apps[1].Backoff.Max = time.Minute
			c.Apps[1].Passive.Count5xx = true
			c.Apps[1].Queue.Size = 1
			c.Apps[1].Balance = BalanceP2C
		},
			Diff{Changed: []AppDiff{{Name: "api", Settings: true, Fields: []string{
				"app.api.backoff.max", "app.api.passive.count_5xx", "app.api.balance", "app.api.queue.size"}}}},
			"api: settings (backoff.max, passive.count_5xx, balance, queue.size)"},
		{"restart scale and settings in one app", func(c *Config) {
			c.Apps[0].Command = []string{"./web2"}
			c.Apps[0].Instances = 1
			c.Apps[0].Hosts = []string{"example.org"}
		},
			Diff{Changed: []AppDiff{{Name: "web", Restart: true, Scale: true, From: 2, To: 1, Settings: true,
				Fields: []string{"app.web.command", "app.web.instances", "app.web.hosts"}}}},
			"web: rolling restart (command), 2 -> 1 instances, settings (hosts)"},
		{"several apps", func(c *Config) { c.Apps[0].Retries = 0; c.Apps[1].Instances = 3 },
			Diff{Changed: []AppDiff{
				{Name: "web", Settings: true, Fields: []string{"app.web.retries"}},
				{Name: "api", Scale: true, From: 2, To: 3, Fields: []string{"app.api.instances"}},
			}},
			"web: settings (retries); api: 2 -> 3 instances"},
		{"app added and removed", func(c *Config) {
			admin := *c.Apps[1]
			admin.Name = "admin"
			c.Apps = []*App{c.Apps[0], &admin}
		},
			Diff{Added: []string{"admin"}, Removed: []string{"api"}},
			"app added: admin; app removed: api"},
		{"log", func(c *Config) { c.Log.Level = "debug" }, Diff{LogChanged: true}, "log settings"},
		{"listen", func(c *Config) { c.Listen = "127.0.0.1:1" }, Diff{ListenChanged: true}, "listen address"},
		{"admin", func(c *Config) { c.Admin.Listen = "" }, Diff{AdminChanged: true}, "admin listen address"},
		{"admin token is access, not listen", func(c *Config) { c.Admin.Token = "0123456789abcdef" },
			Diff{AccessChanged: true}, "admin access (token, hosts)"},
		{"admin hosts", func(c *Config) { c.Admin.Hosts = []string{"corral.internal"} },
			Diff{AccessChanged: true}, "admin access (token, hosts)"},
		{"proxy", func(c *Config) { c.Proxy.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} },
			Diff{ProxyChanged: true}, "proxy settings"},
		{"proxy tls", func(c *Config) { c.Proxy.TLS = &TLS{Cert: "/c", Key: "/k"} }, Diff{ProxyChanged: true}, "proxy settings"},
		{"shutdown counts as proxy", func(c *Config) { c.Shutdown.PreStopDelay = time.Second }, Diff{ProxyChanged: true}, "proxy settings"},
		{"worker ports count as proxy", func(c *Config) { c.WorkerPorts.Last = 20999 }, Diff{ProxyChanged: true}, "proxy settings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old, new := baseConfig(t), baseConfig(t)
			new.Path = old.Path
			for _, a := range new.Apps {
				a.Dir = old.Apps[0].Dir // each parse had its own temp dir
			}
			tt.edit(new)
			got := Compare(old, new)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Compare =\n%+v\nwant\n%+v", got, tt.want)
			}
			if got.Empty() != reflect.DeepEqual(tt.want, Diff{}) {
				t.Errorf("Empty() = %v", got.Empty())
			}
			if got.String() != tt.str {
				t.Errorf("String() = %q, want %q", got.String(), tt.str)
			}
		})
	}
}

func TestCompareDoesNotModifyItsInputs(t *testing.T) {
	old, new := baseConfig(t), baseConfig(t)
	new.Apps[0].Instances = 3
	oldCopy, newCopy := *old.Apps[0], *new.Apps[0]
	Compare(old, new)
	if !reflect.DeepEqual(*old.Apps[0], oldCopy) || !reflect.DeepEqual(*new.Apps[0], newCopy) {
		t.Error("Compare changed its inputs")
	}
}

func TestProcessEqual(t *testing.T) {
	a := &App{Command: []string{"x"}, Dir: "/d", Env: map[string]string{}, Instances: 1}
	tests := []struct {
		name string
		edit func(b *App)
		want bool
	}{
		{"same", func(b *App) {}, true},
		{"nil env equals empty env", func(b *App) { b.Env = nil }, true},
		{"instances do not count", func(b *App) { b.Instances = 9 }, true},
		{"health does not count", func(b *App) { b.Health = &Health{} }, true},
		{"command", func(b *App) { b.Command = []string{"x", "y"} }, false},
		{"dir", func(b *App) { b.Dir = "/e" }, false},
		{"env", func(b *App) { b.Env = map[string]string{"A": ""} }, false},
		{"user", func(b *App) { b.User = "nobody" }, false},
		{"group", func(b *App) { b.Group = "nogroup" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := *a
			tt.edit(&b)
			if got := a.ProcessEqual(&b); got != tt.want {
				t.Errorf("ProcessEqual = %v, want %v", got, tt.want)
			}
		})
	}
}
