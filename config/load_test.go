package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// writeConfig writes src as config.hcl in a fresh directory and returns its path.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// problemsOf loads src and returns the problems, failing if it loaded.
func problemsOf(t *testing.T, src string) Problems {
	t.Helper()
	cfg, err := Load(writeConfig(t, src))
	if err == nil {
		t.Fatalf("Load succeeded, want problems; got %+v", cfg)
	}
	var problems Problems
	if !errors.As(err, &problems) {
		t.Fatalf("Load error %v (%T) is not Problems", err, err)
	}
	return problems
}

// defaultApp is the app a minimal block with only a command turns into.
func defaultApp(name, dir string, command ...string) *App {
	return &App{
		Name:          name,
		Command:       command,
		Dir:           dir,
		Env:           map[string]string{},
		SettleTime:    time.Second,
		Instances:     runtime.NumCPU(),
		StopSignal:    syscall.SIGTERM,
		DrainTimeout:  30 * time.Second,
		StopTimeout:   30 * time.Second,
		StartTimeout:  60 * time.Second,
		Backoff:       Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, ResetAfter: 30 * time.Second, MinUptime: time.Second, QuickRestarts: 10},
		Output:        Output{LinesPerSecond: 2000, Burst: 10000},
		Surge:         1,
		WatchDebounce: 500 * time.Millisecond,
		Recycle:       Recycle{Interval: 5 * time.Second},
		Passive:       Passive{Failures: 5, BaseEjection: 10 * time.Second, MaxEjection: 5 * time.Minute, MaxEjectedPercent: 50},
		Balance:       BalanceLeastOutstanding,
		StickyCookie:  "corral_sticky",
		Queue:         Queue{Size: 256, Timeout: 10 * time.Second},
		Retries:       2,
		RetryTimeout:  10 * time.Second,
	}
}

func TestLoadMinimalAppGetsEveryDefault(t *testing.T) {
	path := writeConfig(t, `app "web" { command = ["./server", "{port}"] }`)
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Path:        path,
		Listen:      "127.0.0.1:8080",
		WorkerPorts: PortRange{First: 20000, Last: 29999},
		Admin:       Admin{Listen: "127.0.0.1:9180"},
		Log:         Log{Level: "info", Format: "text"},
		Proxy: Proxy{
			ReadHeaderTimeout:     10 * time.Second,
			IdleTimeout:           90 * time.Second,
			MaxHeaderBytes:        16384,
			DialTimeout:           2 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			WorkerIdleTimeout:     90 * time.Second,
			RequestID:             true,
			Buffering: Buffering{
				RequestMemory: 1 << 20, RequestDisk: 16 << 20,
				ResponseMemory: 1 << 20, ResponseDisk: 1 << 30,
				MemoryLimit: 128 << 20, DiskLimit: 4 << 30, Chunked: true,
			},
		},
		Shutdown: Shutdown{Timeout: 25 * time.Second},
		Apps:     []*App{defaultApp("web", filepath.Dir(path), "./server", "{port}")},
	}
	assertConfig(t, got, want)
}

func TestLoadHealthBlockDefaults(t *testing.T) {
	cfg, err := Load(writeConfig(t, `app "web" {
  command = ["x"]
  health {}
}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Health{Type: "http", Path: "/", Interval: 2 * time.Second, Timeout: time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 3, RestartAfter: 60 * time.Second}
	if !reflect.DeepEqual(cfg.Apps[0].Health, want) {
		t.Errorf("health = %+v, want %+v", cfg.Apps[0].Health, want)
	}
}

func TestLoadFullExampleSetsEveryKey(t *testing.T) {
	got, err := Load("testdata/full.hcl")
	if err != nil {
		t.Fatal(err)
	}
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	web := &App{
		Name:          "web",
		Command:       []string{"python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"},
		Dir:           dir,
		Env:           map[string]string{"GREETING": "hi", "MODE": "production"},
		User:          "www-data",
		SettleTime:    time.Second,
		Group:         "www-data",
		Instances:     4,
		StopSignal:    syscall.SIGQUIT,
		DrainTimeout:  15 * time.Second,
		StopTimeout:   20 * time.Second,
		StartTimeout:  30 * time.Second,
		Backoff:       Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second, ResetAfter: time.Minute, MinUptime: 2 * time.Second, QuickRestarts: 5},
		Output:        Output{LinesPerSecond: 5000, Burst: 20000},
		Surge:         2,
		ExitOnFailure: 5 * time.Minute,
		Watch:         []string{filepath.Join(dir, "src")},
		WatchDebounce: time.Second,
		Recycle:       Recycle{MaxRequests: 10000, MaxMemory: 512 << 20, MaxAge: 24 * time.Hour, Interval: 2 * time.Second},
		Autoscale: &Autoscale{Min: 2, Max: 6, ScaleUpAfter: 3 * time.Second, ScaleDownAfter: time.Minute,
			Cooldown: 20 * time.Second, Interval: time.Second},
		Health: &Health{Type: "http", Path: "/healthz", Host: "web.internal", Interval: 3 * time.Second,
			Timeout: 2 * time.Second, ExpectStatus: []int{200, 204}, HealthyThreshold: 1,
			UnhealthyThreshold: 4, RestartAfter: 2 * time.Minute},
		Passive:      Passive{Failures: 3, Count5xx: true, BaseEjection: 5 * time.Second, MaxEjection: time.Minute, MaxEjectedPercent: 25},
		Hosts:        []string{"example.com", "*.example.com"},
		PathPrefix:   "/app",
		StripPrefix:  true,
		Balance:      BalanceCookie,
		StickyCookie: "web_affinity",
		MaxInflight:  8,
		Queue:        Queue{Size: 100, Timeout: 3 * time.Second},
		Retries:      1,
		RetryTimeout: 5 * time.Second,
	}
	api := defaultApp("api", dir, "./api", "--listen=127.0.0.1:{port}")
	api.Instances = 2
	api.Health = &Health{Type: "tcp", Path: "/", Interval: 2 * time.Second, Timeout: time.Second,
		HealthyThreshold: 2, UnhealthyThreshold: 3, RestartAfter: 60 * time.Second}
	uds := defaultApp("uds", dir, "./api", "--uds={socket}")
	uds.Instances = 2
	uds.PathPrefix = "/uds"
	want := &Config{
		Path:        filepath.Join(dir, "full.hcl"),
		Listen:      "127.0.0.1:8443",
		WorkerPorts: PortRange{First: 21000, Last: 21999},
		Admin: Admin{Listen: "127.0.0.1:9181", Token: "full-example-token-0123456789",
			TokenFile: filepath.Join(dir, "admin.token"), Hosts: []string{"corral.internal"}},
		Log: Log{Level: "debug", Format: "json", Access: true},
		Proxy: Proxy{
			ReadHeaderTimeout:     5 * time.Second,
			ReadTimeout:           30 * time.Second,
			WriteTimeout:          60 * time.Second,
			IdleTimeout:           120 * time.Second,
			MaxHeaderBytes:        32768,
			MaxBodyBytes:          10 << 20,
			DialTimeout:           time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			WorkerIdleTimeout:     60 * time.Second,
			TrustedProxies:        []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32")},
			RequestID:             false,
			H2C:                   true,
			TLS:                   &TLS{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem")},
			Buffering: Buffering{
				RequestMemory: 512 << 10, RequestDisk: 8 << 20,
				ResponseMemory: 256 << 10, ResponseDisk: 100 << 20,
				MemoryLimit: 64 << 20, DiskLimit: 1 << 30, Chunked: false, Dir: dir,
			},
		},
		Shutdown: Shutdown{Timeout: 20 * time.Second, PreStopDelay: 2 * time.Second},
		Apps:     []*App{web, api, uds},
	}
	assertConfig(t, got, want)
	if web.UsesSocket() || api.UsesSocket() || !uds.UsesSocket() {
		t.Errorf("UsesSocket: web %v, api %v, uds %v; want false, false, true", web.UsesSocket(), api.UsesSocket(), uds.UsesSocket())
	}
}

// assertConfig compares field by field so a failure names the field.
func assertConfig(t *testing.T, got, want *Config) {
	t.Helper()
	gotApps, wantApps := got.Apps, want.Apps
	g, w := *got, *want
	g.Apps, w.Apps = nil, nil
	if !reflect.DeepEqual(g, w) {
		t.Errorf("config =\n%+v\nwant\n%+v", g, w)
	}
	if len(gotApps) != len(wantApps) {
		t.Fatalf("%d apps, want %d", len(gotApps), len(wantApps))
	}
	for i := range gotApps {
		ga, wa := reflect.ValueOf(*gotApps[i]), reflect.ValueOf(*wantApps[i])
		for f := 0; f < ga.NumField(); f++ {
			if !reflect.DeepEqual(ga.Field(f).Interface(), wa.Field(f).Interface()) {
				t.Errorf("app %d %s = %+v, want %+v", i, ga.Type().Field(f).Name, ga.Field(f).Interface(), wa.Field(f).Interface())
			}
		}
		if gh, wh := gotApps[i].Health, wantApps[i].Health; gh != nil && wh != nil && !reflect.DeepEqual(*gh, *wh) {
			t.Errorf("app %d health = %+v, want %+v", i, *gh, *wh)
		}
	}
}

func TestLoadValues(t *testing.T) {
	tests := []struct {
		name  string
		app   string // lines inside app "web" { command = ["x"] ... }
		check func(*App) bool
	}{
		{"hosts lowercased", `hosts = ["API.Example.COM"]`, func(a *App) bool { return reflect.DeepEqual(a.Hosts, []string{"api.example.com"}) }},
		{"prefix trailing slash dropped", `path_prefix = "/api/"`, func(a *App) bool { return a.PathPrefix == "/api" }},
		{"root prefix kept", `path_prefix = "/"`, func(a *App) bool { return a.PathPrefix == "/" }},
		{"signal without SIG", `stop_signal = "INT"`, func(a *App) bool { return a.StopSignal == syscall.SIGINT }},
		{"signal with SIG", `stop_signal = "SIGUSR2"`, func(a *App) bool { return a.StopSignal == syscall.SIGUSR2 }},
		{"zero reset_after", "backoff {\nreset_after = \"0s\"\n}", func(a *App) bool { return a.Backoff.ResetAfter == 0 }},
		{"zero min_uptime", "backoff {\nmin_uptime = \"0s\"\n}", func(a *App) bool { return a.Backoff.MinUptime == 0 }},
		{"zero quick_restarts", "backoff {\nquick_restarts = 0\n}", func(a *App) bool { return a.Backoff.QuickRestarts == 0 }},
		{"output unbounded", "output {\nlines_per_second = 0\n}", func(a *App) bool { return a.Output == Output{LinesPerSecond: 0, Burst: 10000} }},
		{"output bounds", "output {\nlines_per_second = 50\nburst = 1\n}", func(a *App) bool { return a.Output == Output{LinesPerSecond: 50, Burst: 1} }},
		{"timeout longer than interval", "health {\ninterval = \"500ms\"\ntimeout = \"1s\"\n}", func(a *App) bool {
			return a.Health.Interval == 500*time.Millisecond && a.Health.Timeout == time.Second
		}},
		{"zero restart_after", "health {\nrestart_after = \"0s\"\n}", func(a *App) bool { return a.Health.RestartAfter == 0 }},
		{"timeout equal to interval", "health {\ninterval = \"1s\"\ntimeout = \"1s\"\n}", func(a *App) bool { return a.Health.Timeout == time.Second }},
		{"relative dir", `dir = "sub"`, func(a *App) bool { return filepath.Base(a.Dir) == "sub" && filepath.IsAbs(a.Dir) }},
		{"absolute watch kept", `watch = ["/tmp"]`, func(a *App) bool { return reflect.DeepEqual(a.Watch, []string{"/tmp"}) }},
		{"surge equal to instances", "instances = 2\nsurge = 2", func(a *App) bool { return a.Surge == 2 }},
		{"background app", "serve = false\nsettle_time = \"250ms\"", func(a *App) bool { return a.Background && a.SettleTime == 250*time.Millisecond }},
		{"served by default", "", func(a *App) bool { return !a.Background && a.SettleTime == time.Second }},
		{"recycle off by default", "", func(a *App) bool { return !a.Recycle.On() && a.Recycle.Interval == 5*time.Second }},
		{"recycle max_memory as bytes", "recycle {\nmax_memory = 1048576\n}", func(a *App) bool { return a.Recycle.MaxMemory == 1<<20 && a.Recycle.On() }},
		{"recycle max_memory in MB", "recycle {\nmax_memory = \"300MB\"\n}", func(a *App) bool { return a.Recycle.MaxMemory == 300e6 }},
		{"autoscale off by default", "", func(a *App) bool { return a.Autoscale == nil }},
		{"autoscale starts at min", "max_inflight = 1\nautoscale {\nmin = 2\nmax = 4\n}", func(a *App) bool {
			return a.Instances == 2 && *a.Autoscale == Autoscale{Min: 2, Max: 4, ScaleUpAfter: 2 * time.Second,
				ScaleDownAfter: 30 * time.Second, Cooldown: 5 * time.Second, Interval: 500 * time.Millisecond}
		}},
		{"autoscale starts at instances", "max_inflight = 1\ninstances = 3\nautoscale {\nmax = 4\n}", func(a *App) bool { return a.Instances == 3 && a.Autoscale.Min == 1 }},
		{"surge up to autoscale max", "max_inflight = 1\nsurge = 3\nautoscale {\nmax = 4\n}", func(a *App) bool { return a.Instances == 1 && a.Surge == 3 }},
		{"recycle max_age alone", "recycle {\nmax_age = \"1h\"\n}", func(a *App) bool { return a.Recycle.MaxAge == time.Hour && a.Recycle.MaxRequests == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, "app \"web\" {\ncommand = [\"x\"]\n"+tt.app+"\n}\n")
			if err := os.Mkdir(filepath.Join(filepath.Dir(path), "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(cfg.Apps[0]) {
				t.Errorf("unexpected app %+v", cfg.Apps[0])
			}
		})
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		value string
		want  int64
	}{
		{"0", 0},
		{"1048576", 1 << 20},
		{`"512"`, 512},
		{`"512B"`, 512},
		{`"512KB"`, 512000},
		{`"10MiB"`, 10 << 20},
		{`"10 mib"`, 10 << 20},
		{`"1GB"`, 1e9},
		{`"2GiB"`, 2 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, "proxy { max_body_bytes = "+tt.value+" }\napp \"web\" { command = [\"x\"] }"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Proxy.MaxBodyBytes != tt.want {
				t.Errorf("max_body_bytes = %d, want %d", cfg.Proxy.MaxBodyBytes, tt.want)
			}
		})
	}
}

func TestMaxConnections(t *testing.T) {
	tests := []struct {
		src  string
		want int
	}{
		{"", 0}, // derived from the file limit when the proxy starts
		{"proxy { max_connections = 1 }\n", 1},
		{"proxy { max_connections = 20000 }\n", 20000},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			cfg, err := Load(writeConfig(t, tt.src+"app \"web\" { command = [\"x\"] }"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Proxy.MaxConnections != tt.want {
				t.Errorf("max_connections = %d, want %d", cfg.Proxy.MaxConnections, tt.want)
			}
		})
	}
}

func TestLoadProblems(t *testing.T) {
	tests := []struct {
		name    string
		src     string
		line    int
		key     string
		message string // substring
	}{
		{"syntax error", "app \"web\" {\n  command = [\"x\"\n}\n", 3, "", "missing"},
		{"unclosed block", "listen = \"127.0.0.1:1\"\napp \"web\" {\n", 2, "", "unclosed"},
		{"unknown key", "app \"web\" {\n  command = [\"x\"]\n  comand = [\"y\"]\n}\n", 3, "app.web.comand", "unsupported argument"},
		{"unknown top-level key", "\nlisen = \"1\"\napp \"web\" { command = [\"x\"] }\n", 2, "lisen", "unsupported argument"},
		{"unknown block", "app \"web\" {\n  command = [\"x\"]\n  healthcheck {}\n}\n", 3, "app.web.healthcheck", "unsupported block type"},
		{"wrong type", "app \"web\" {\n  command = [\"x\"]\n  instances = \"four\"\n}\n", 3, "app.web.instances", "wrong type: a number is required"},
		{"wrong type list", "app \"web\" {\n  command = \"./server\"\n}\n", 2, "app.web.command", "wrong type"},
		{"duplicate block", "app \"web\" {\n  command = [\"x\"]\n  health {}\n  health {}\n}\n", 4, "app.web.health", "duplicate health block"},
		{"missing label", "app {\n  command = [\"x\"]\n}\n", 1, "app", "missing name"},
		{"bad duration", "app \"web\" {\n  command = [\"x\"]\n  health {\n    interval = \"two\"\n  }\n}\n", 4, "app.web.health.interval", `must be a duration like "2s", got "two"`},
		{"negative duration", "app \"web\" {\n  command = [\"x\"]\n  stop_timeout = \"-1s\"\n}\n", 3, "app.web.stop_timeout", "must not be negative"},
		{"background app with {port}", "app \"jobs\" {\n  command = [\"worker\", \"--port={port}\"]\n  serve = false\n}\n", 2, "app.jobs.command", "gets no port"},
		{"background app with {socket}", "app \"jobs\" {\n  command = [\"worker\",\n    \"--uds={socket}\"]\n  serve = false\n}\n", 3, "app.jobs.command", "gets no port"},
		{"both {port} and {socket}", "app \"web\" {\n  command = [\"server\", \"--port={port}\",\n    \"--uds={socket}\"]\n}\n", 3, "app.web.command", "uses both {port} and {socket}"},
		{"{port} and {socket} in one argument", "app \"web\" {\n  command = [\"server\",\n    \"--listen={port},{socket}\"]\n}\n", 3, "app.web.command", "uses both {port} and {socket}"},
		{"background app with health", "app \"jobs\" {\n  command = [\"worker\"]\n  serve = false\n  health {}\n}\n", 4, "app.jobs.health", "no port to check"},
		{"background app with a route", "app \"jobs\" {\n  command = [\"worker\"]\n  serve = false\n  path_prefix = \"/jobs\"\n}\n", 4, "app.jobs.path_prefix", "no route"},
		{"zero recycle check_interval", "app \"web\" {\n  command = [\"x\"]\n  recycle {\n    check_interval = \"0s\"\n  }\n}\n", 4, "app.web.recycle.check_interval", "greater than 0"},
		{"negative max_requests", "app \"web\" {\n  command = [\"x\"]\n  recycle {\n    max_requests = -1\n  }\n}\n", 4, "app.web.recycle.max_requests", ""},
		{"bad max_memory", "app \"web\" {\n  command = [\"x\"]\n  recycle {\n    max_memory = \"lots\"\n  }\n}\n", 4, "app.web.recycle.max_memory", "size like"},
		{"autoscale without max", "app \"web\" {\n  command = [\"x\"]\n  max_inflight = 1\n  autoscale {\n    min = 2\n  }\n}\n", 4, "app.web.autoscale.max", "is required"},
		{"autoscale max below min", "app \"web\" {\n  command = [\"x\"]\n  max_inflight = 1\n  autoscale {\n    min = 3\n    max = 2\n  }\n}\n", 6, "app.web.autoscale.max", "less than min (3)"},
		{"autoscale min zero", "app \"web\" {\n  command = [\"x\"]\n  max_inflight = 1\n  autoscale {\n    min = 0\n    max = 2\n  }\n}\n", 5, "app.web.autoscale.min", "between 1 and 256"},
		{"instances outside autoscale", "app \"web\" {\n  command = [\"x\"]\n  max_inflight = 1\n  instances = 5\n  autoscale {\n    max = 4\n  }\n}\n", 4, "app.web.instances", "within min..max (1..4)"},
		{"autoscale without max_inflight", "app \"web\" {\n  command = [\"x\"]\n  autoscale {\n    max = 4\n  }\n}\n", 3, "app.web.autoscale", "set max_inflight"},
		{"autoscale zero scale_down_after", "app \"web\" {\n  command = [\"x\"]\n  max_inflight = 1\n  autoscale {\n    max = 4\n    scale_down_after = \"0s\"\n  }\n}\n", 6, "app.web.autoscale.scale_down_after", "greater than 0"},
		{"autoscale bad cooldown", "app \"web\" {\n  command = [\"x\"]\n  max_inflight = 1\n  autoscale {\n    max = 4\n    cooldown = \"soon\"\n  }\n}\n", 6, "app.web.autoscale.cooldown", "must be a duration"},
		{"autoscale on a background app", "app \"jobs\" {\n  command = [\"x\"]\n  serve = false\n  autoscale {\n    max = 4\n  }\n}\n", 4, "app.jobs.autoscale", "no requests to scale by"},
		{"zero interval", "app \"web\" {\n  command = [\"x\"]\n  health {\n    interval = \"0s\"\n  }\n}\n", 4, "app.web.health.interval", "greater than 0"},
		{"bad listen", "\n\nlisten = \"8080\"\napp \"web\" { command = [\"x\"] }\n", 3, "listen", "must be host:port"},
		{"bad listen port", "listen = \"127.0.0.1:http\"\napp \"web\" { command = [\"x\"] }\n", 1, "listen", "must be host:port"},
		{"listen equals admin", "listen = \"127.0.0.1:9000\"\nadmin {\n  listen = \"127.0.0.1:9000\"\n}\napp \"web\" { command = [\"x\"] }\n", 3, "admin.listen", "must differ from listen"},
		{"bad log level", "log {\n  level = \"verbose\"\n}\napp \"web\" { command = [\"x\"] }\n", 2, "log.level", "must be one of trace, debug, info, warn, error"},
		{"bad log format", "log {\n  format = \"xml\"\n}\napp \"web\" { command = [\"x\"] }\n", 2, "log.format", "must be one of text, json"},
		{"missing command", "app \"web\" {\n  instances = 1\n}\n", 1, "app.web.command", "is required"},
		{"empty command", "app \"web\" {\n  command = []\n}\n", 2, "app.web.command", "must name a program"},
		{"empty program", "app \"web\" {\n  command = [\"\", \"x\"]\n}\n", 2, "app.web.command", "must name a program"},
		{"no app", "listen = \"127.0.0.1:1\"\n", 1, "app", "at least one app"},
		{"bad app name", "app \"web.1\" {\n  command = [\"x\"]\n}\n", 1, "app.web.1", "must use only letters"},
		{"duplicate app names", "app \"web\" {\n  command = [\"x\"]\n  hosts = [\"a.com\"]\n}\napp \"web\" {\n  command = [\"y\"]\n  hosts = [\"b.com\"]\n}\n", 5, "app.web", "defined twice"},
		{"two default apps", "app \"web\" {\n  command = [\"x\"]\n}\napp \"api\" {\n  command = [\"y\"]\n}\n", 4, "app.api", "only one app may be the default"},
		{"same route", "app \"web\" {\n  command = [\"x\"]\n  hosts = [\"a.com\", \"b.com\"]\n}\napp \"api\" {\n  command = [\"y\"]\n  hosts = [\"b.com\"]\n}\n", 7, "app.api.hosts", `same hosts and path_prefix as app "web"`},
		{"same prefix", "app \"web\" {\n  command = [\"x\"]\n  path_prefix = \"/api/\"\n}\napp \"api\" {\n  command = [\"y\"]\n  path_prefix = \"/api\"\n}\n", 7, "app.api.path_prefix", `same hosts and path_prefix as app "web"`},
		{"bad balance", "app \"web\" {\n  command = [\"x\"]\n  balance = \"random\"\n}\n", 3, "app.web.balance", "must be one of least_outstanding, round_robin, p2c, ip_hash, cookie"},
		{"bad stop_signal", "app \"web\" {\n  command = [\"x\"]\n  stop_signal = \"SIGSTOP\"\n}\n", 3, "app.web.stop_signal", "must be one of SIGTERM"},
		{"bad path_prefix", "app \"web\" {\n  command = [\"x\"]\n  path_prefix = \"api\"\n}\n", 3, "app.web.path_prefix", `starting with "/"`},
		{"bad host wildcard", "app \"web\" {\n  command = [\"x\"]\n  hosts = [\"api.*.example.com\"]\n}\n", 3, "app.web.hosts", `wildcard is allowed only as a leading "*."`},
		{"host with port", "app \"web\" {\n  command = [\"x\"]\n  hosts = [\"example.com:8080\"]\n}\n", 3, "app.web.hosts", "without a port"},
		{"bad host", "app \"web\" {\n  command = [\"x\"]\n  hosts = [\"exa mple.com\"]\n}\n", 3, "app.web.hosts", "not a valid host name"},
		{"reserved env key", "app \"web\" {\n  command = [\"x\"]\n  env = {\n    PORT = \"80\"\n  }\n}\n", 4, "app.web.env", `"PORT" is set by corral`},
		{"bad env key", "app \"web\" {\n  command = [\"x\"]\n  env = { \"MY-VAR\" = \"1\" }\n}\n", 3, "app.web.env", "not a valid environment variable name"},
		{"bad host points at its element", "app \"web\" {\n  command = [\"x\"]\n  hosts = [\n    \"a.com\",\n    \"b*.com\",\n  ]\n}\n", 5, "app.web.hosts", "wildcard"},
		{"bad timeout not judged against a bad interval", "app \"web\" {\n  command = [\"x\"]\n  health {\n    interval = \"-1s\"\n    timeout = \"1m\"\n  }\n}\n", 4, "app.web.health.interval", "must not be negative"},
		{"surge not judged against bad instances", "app \"web\" {\n  command = [\"x\"]\n  instances = 0\n  surge = 3\n}\n", 3, "app.web.instances", "got 0"},
		{"instances 0", "app \"web\" {\n  command = [\"x\"]\n  instances = 0\n}\n", 3, "app.web.instances", "must be between 1 and 256, got 0"},
		{"instances 257", "app \"web\" {\n  command = [\"x\"]\n  instances = 257\n}\n", 3, "app.web.instances", "must be between 1 and 256"},
		{"surge over instances", "app \"web\" {\n  command = [\"x\"]\n  instances = 2\n  surge = 3\n}\n", 4, "app.web.surge", "must be between 1 and 2, got 3"},
		{"missing dir", "app \"web\" {\n  command = [\"x\"]\n  dir = \"nope\"\n}\n", 3, "app.web.dir", "does not exist"},
		{"dir is a file", "app \"web\" {\n  command = [\"x\"]\n  dir = \"config.hcl\"\n}\n", 3, "app.web.dir", "is not a directory"},
		{"tls file missing", "proxy {\n  tls {\n    cert = \"cert.pem\"\n    key = \"config.hcl\"\n  }\n}\napp \"web\" { command = [\"x\"] }\n", 3, "proxy.tls.cert", "does not exist"},
		{"tls key required", "proxy {\n  tls {\n    cert = \"config.hcl\"\n  }\n}\napp \"web\" { command = [\"x\"] }\n", 2, "proxy.tls.key", "is required"},
		{"healthy_threshold 0", "app \"web\" {\n  command = [\"x\"]\n  health {\n    healthy_threshold = 0\n  }\n}\n", 4, "app.web.health.healthy_threshold", "must be between 1"},
		{"unhealthy_threshold 0", "app \"web\" {\n  command = [\"x\"]\n  health {\n    unhealthy_threshold = 0\n  }\n}\n", 4, "app.web.health.unhealthy_threshold", "must be between 1"},
		{"bad health type", "app \"web\" {\n  command = [\"x\"]\n  health {\n    type = \"grpc\"\n  }\n}\n", 4, "app.web.health.type", "must be one of http, tcp"},
		{"bad health path", "app \"web\" {\n  command = [\"x\"]\n  health {\n    path = \"healthz\"\n  }\n}\n", 4, "app.web.health.path", `must start with "/"`},
		{"bad expect_status", "app \"web\" {\n  command = [\"x\"]\n  health {\n    expect_status = [\n      200,\n      99,\n    ]\n  }\n}\n", 6, "app.web.health.expect_status", "got 99"},
		{"output negative rate", "app \"web\" {\n  command = [\"x\"]\n  output {\n    lines_per_second = -1\n  }\n}\n", 4, "app.web.output.lines_per_second", "0"},
		{"output zero burst", "app \"web\" {\n  command = [\"x\"]\n  output {\n    burst = 0\n  }\n}\n", 4, "app.web.output.burst", "1"},
		{"backoff min over max", "app \"web\" {\n  command = [\"x\"]\n  backoff {\n    min = \"1m\"\n    max = \"1s\"\n  }\n}\n", 5, "app.web.backoff.max", "must not be less than min"},
		{"ejected percent", "app \"web\" {\n  command = [\"x\"]\n  passive {\n    max_ejected_percent = 101\n  }\n}\n", 4, "app.web.passive.max_ejected_percent", "between 0 and 100"},
		{"retries 11", "app \"web\" {\n  command = [\"x\"]\n  retries = 11\n}\n", 3, "app.web.retries", "between 0 and 10"},
		{"bad sticky_cookie", "app \"web\" {\n  command = [\"x\"]\n  sticky_cookie = \"a b\"\n}\n", 3, "app.web.sticky_cookie", "valid cookie name"},
		{"bad max_body_bytes", "proxy {\n  max_body_bytes = \"10 parsecs\"\n}\napp \"web\" { command = [\"x\"] }\n", 2, "proxy.max_body_bytes", "size like"},
		{"negative max_body_bytes", "proxy {\n  max_body_bytes = -1\n}\napp \"web\" { command = [\"x\"] }\n", 2, "proxy.max_body_bytes", "byte count"},
		{"buffer in memory over 1GiB", "proxy {\n  buffering {\n    response_memory = \"2GiB\"\n  }\n}\napp \"web\" { command = [\"x\"] }\n", 3, "proxy.buffering.response_memory", "at most 1GiB"},
		{"memory_limit under a buffer", "proxy {\n  buffering {\n    memory_limit = \"512KiB\"\n  }\n}\napp \"web\" { command = [\"x\"] }\n", 3, "proxy.buffering.memory_limit", "at least request_memory"},
		{"buffering dir missing", "proxy {\n  buffering {\n    dir = \"nowhere\"\n  }\n}\napp \"web\" { command = [\"x\"] }\n", 3, "proxy.buffering.dir", "does not exist"},
		{"bad buffer size", "proxy {\n  buffering {\n    request_disk = \"lots\"\n  }\n}\napp \"web\" { command = [\"x\"] }\n", 3, "proxy.buffering.request_disk", "size like"},
		{"max_connections 0", "proxy {\n  max_connections = 0\n}\napp \"web\" { command = [\"x\"] }\n", 2, "proxy.max_connections", "must be between 1 and 16777216, got 0"},
		{"negative max_connections", "proxy {\n  max_connections = -5\n}\napp \"web\" { command = [\"x\"] }\n", 2, "proxy.max_connections", "must be between 1"},
		{"bad trusted proxy", "proxy {\n  trusted_proxies = [\"10.0.0.0/33\"]\n}\napp \"web\" { command = [\"x\"] }\n", 2, "proxy.trusted_proxies", "CIDRs or IP addresses"},
		{"bad worker_ports", "worker_ports = \"20000:29999\"\napp \"web\" { command = [\"x\"] }\n", 1, "worker_ports", "port range like"},
		{"worker_ports below 1024", "worker_ports = \"80-2000\"\napp \"web\" { command = [\"x\"] }\n", 1, "worker_ports", "within 1024-65535"},
		{"worker_ports reversed", "worker_ports = \"30000-20000\"\napp \"web\" { command = [\"x\"] }\n", 1, "worker_ports", "must not exceed"},
		{"worker_ports too small", "worker_ports = \"20000-20009\"\napp \"web\" {\n  command = [\"x\"]\n  instances = 5\n}\n", 1, "worker_ports", "need at least 12"},
		{"listen inside worker_ports", "worker_ports = \"20000-29999\"\nlisten = \"127.0.0.1:20080\"\napp \"web\" { command = [\"x\"] }\n", 2, "listen", "lies within worker_ports 20000-29999"},
		{"admin inside worker_ports", "admin {\n  listen = \":25000\"\n}\napp \"web\" { command = [\"x\"] }\n", 2, "admin.listen", "lies within worker_ports"},
		{"listen not judged against bad worker_ports", "worker_ports = \"29000-21000\"\nlisten = \"127.0.0.1:25000\"\napp \"web\" { command = [\"x\"] }\n", 1, "worker_ports", "must not exceed"},
		{"zero stop_timeout", "app \"web\" {\n  command = [\"x\"]\n  stop_timeout = \"0s\"\n}\n", 3, "app.web.stop_timeout", `greater than 0 (stop_signal = "SIGKILL" kills at once)`},
		{"zero drain_timeout", "app \"web\" {\n  command = [\"x\"]\n  drain_timeout = \"0s\"\n}\n", 3, "app.web.drain_timeout", "greater than 0"},
		{"token and token_file", "admin {\n  token = \"0123456789abcdef\"\n  token_file = \"t\"\n}\napp \"web\" { command = [\"x\"] }\n", 3, "admin.token_file", "not both"},
		{"short token", "admin {\n  token = \"secret\"\n}\napp \"web\" { command = [\"x\"] }\n", 2, "admin.token", "at least 16 characters"},
		{"token with a space", "admin {\n  token = \"0123456789 abcdef\"\n}\napp \"web\" { command = [\"x\"] }\n", 2, "admin.token", "printable ASCII without spaces"},
		{"missing token_file", "admin {\n  listen = \"127.0.0.1:9180\"\n  token_file = \"nope.token\"\n}\napp \"web\" { command = [\"x\"] }\n", 3, "admin.token_file", "cannot read the token"},
		{"admin host with a port", "admin {\n  hosts = [\"corral.internal:9180\"]\n}\napp \"web\" { command = [\"x\"] }\n", 2, "admin.hosts", "without a port"},
		{"zero dial_timeout", "proxy {\n  dial_timeout = \"0s\"\n}\napp \"web\" { command = [\"x\"] }\n", 2, "proxy.dial_timeout", "greater than 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := problemsOf(t, tt.src)
			p := problems[0]
			if len(problems) != 1 || p.Line != tt.line || p.Key != tt.key || !strings.Contains(p.Message, tt.message) {
				t.Errorf("problems:\n%v\nwant exactly one at line %d, key %q, message containing %q", problems, tt.line, tt.key, tt.message)
			}
			if filepath.Base(p.File) != "config.hcl" || p.Column < 1 {
				t.Errorf("problem %+v lacks a file position", p)
			}
		})
	}
}

func TestLoadReportsEveryProblemInFileOrder(t *testing.T) {
	problems := problemsOf(t, `listen = "nope"
log {
  level = "loud"
}
app "web" {
  command   = []
  instances = 0
  balance   = "random"
  health {
    interval = "soon"
  }
  extra = 1
}
app "web" {
  command = ["x"]
}
`)
	want := []string{
		"1:10: listen: ",
		"3:11: log.level: ",
		"6:15: app.web.command: ",
		"7:15: app.web.instances: ",
		"8:15: app.web.balance: ",
		"10:16: app.web.health.interval: ",
		"12:3: app.web.extra: ",
		"14:1: app.web: ",
	}
	if len(problems) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(problems), len(want), problems)
	}
	for i, w := range want {
		if got := problems[i].String(); !strings.Contains(got, "config.hcl:"+w) {
			t.Errorf("problem %d = %q, want it to contain %q", i, got, w)
		}
	}
	if lines := strings.Split(problems.Error(), "\n"); len(lines) != len(want) {
		t.Errorf("Error() has %d lines, want %d", len(lines), len(want))
	}
}

func TestLoadUnreadableFileIsAProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing.hcl")
	_, err := Load(path)
	var problems Problems
	if !errors.As(err, &problems) || len(problems) != 1 {
		t.Fatalf("Load = %v, want one problem", err)
	}
	if got := problems[0].String(); !strings.HasPrefix(got, path+":1:1: ") || !strings.Contains(got, "no such file") {
		t.Errorf("problem = %q", got)
	}
}

func TestProblemString(t *testing.T) {
	p := Problem{File: "config.hcl", Line: 12, Column: 3, Key: "app.web.health.interval", Message: `must be a duration like "2s", got "two"`}
	if got, want := p.String(), `config.hcl:12:3: app.web.health.interval: must be a duration like "2s", got "two"`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	p.Key = ""
	if got, want := p.String(), `config.hcl:12:3: must be a duration like "2s", got "two"`; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

func TestParseResolvesPathsAgainstFilename(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse([]byte(`app "web" {
  command = ["x"]
  dir = "app"
  watch = ["src", "../other"]
}`), filepath.Join(dir, "corral.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Apps[0]
	if a.Dir != filepath.Join(dir, "app") {
		t.Errorf("dir = %s", a.Dir)
	}
	if want := []string{filepath.Join(dir, "src"), filepath.Join(filepath.Dir(dir), "other")}; !reflect.DeepEqual(a.Watch, want) {
		t.Errorf("watch = %v, want %v", a.Watch, want)
	}
	if cfg.Path != filepath.Join(dir, "corral.hcl") {
		t.Errorf("path = %s", cfg.Path)
	}
}

// TestLoadBackgroundAppBesideTheDefault checks that a background app,
// which claims no route, is not a second default app and takes no ports.
func TestLoadBackgroundAppBesideTheDefault(t *testing.T) {
	path := writeConfig(t, "worker_ports = \"20000-20009\"\napp \"web\" {\ncommand = [\"x\", \"{port}\"]\ninstances = 4\n}\n"+
		"app \"jobs\" {\ncommand = [\"y\"]\nserve = false\ninstances = 8\n}\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Apps[1].Background || cfg.Apps[0].Background {
		t.Errorf("background flags %v %v, want false true", cfg.Apps[0].Background, cfg.Apps[1].Background)
	}
}

// TestLoadSocketAppTakesNoPorts: an app on Unix sockets needs no worker
// port, so worker_ports is judged by the TCP apps alone.
func TestLoadSocketAppTakesNoPorts(t *testing.T) {
	path := writeConfig(t, "worker_ports = \"20000-20009\"\napp \"web\" {\ncommand = [\"x\", \"{port}\"]\ninstances = 4\n}\n"+
		"app \"uds\" {\ncommand = [\"y\", \"--bind=unix:{socket}\"]\npath_prefix = \"/uds\"\ninstances = 8\n}\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Apps[0].UsesSocket() || !cfg.Apps[1].UsesSocket() {
		t.Errorf("UsesSocket %v %v, want false true", cfg.Apps[0].UsesSocket(), cfg.Apps[1].UsesSocket())
	}
}

func TestLoadTokenFileIsRelativeTrimmedAndReadAtEveryLoad(t *testing.T) {
	path := writeConfig(t, "admin {\n  token_file = \"secrets/admin.token\"\n}\napp \"web\" { command = [\"x\"] }\n")
	dir := filepath.Join(filepath.Dir(path), "secrets")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "admin.token")
	for _, tc := range []struct{ content, want string }{
		{"first-token-0123456789\n", "first-token-0123456789"},
		{"rotated-token-0123456789\r\n", "rotated-token-0123456789"},
		{"no-newline-0123456789", "no-newline-0123456789"},
	} {
		if err := os.WriteFile(tokenFile, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Admin.Token != tc.want || cfg.Admin.TokenFile != tokenFile {
			t.Errorf("token file %q: Token %q TokenFile %q, want %q from %s", tc.content, cfg.Admin.Token, cfg.Admin.TokenFile, tc.want, tokenFile)
		}
	}
	if err := os.WriteFile(tokenFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	problems := problemsOf(t, "admin {\n  token_file = \""+tokenFile+"\"\n}\napp \"web\" { command = [\"x\"] }\n")
	if len(problems) != 1 || problems[0].Key != "admin.token_file" || problems[0].Line != 2 ||
		!strings.Contains(problems[0].Message, "in "+tokenFile) {
		t.Errorf("an empty token file: %v, want one problem at admin.token_file line 2 naming the file", problems)
	}
}
