package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// The config the soak writes loads, with what the chaos relies on; its
// broken edit does not.
func TestConfigLoads(t *testing.T) {
	c := &soakConfig{path: filepath.Join(t.TempDir(), "config.hcl"), bin: "/bin/soak", listen: "127.0.0.1:1",
		adminAddr: "127.0.0.1:2", token: "soak-token-0123456789abcdef", ports: "30500-30999"}
	if err := c.write(7, 4, false); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(c.path)
	if err != nil {
		t.Fatalf("the soak's config does not load: %v", err)
	}
	apps := map[string]*config.App{}
	for _, a := range cfg.Apps {
		apps[a.Name] = a
	}
	if w := apps["web"]; w.Instances != 4 || w.Env["SOAK_GEN"] != "7" || strings.Join(w.Command, " ") != "/bin/soak worker -port {port}" {
		t.Errorf("web: instances %d, env %v, command %q", w.Instances, w.Env, w.Command)
	}
	if s := apps["sock"]; s.Instances != 2 || s.PathPrefix != "/sock" || !s.StripPrefix {
		t.Errorf("sock: instances %d, prefix %q, strip %v", s.Instances, s.PathPrefix, s.StripPrefix)
	}
	if b := apps["bg"]; !b.Background {
		t.Errorf("bg is not a background app")
	}
	if err := c.write(7, 3, true); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(c.path); err == nil {
		t.Fatal("the broken edit loads")
	}
}

// Only what a kill can cause, around a kill, and from the killed pid when
// the head named one, is put on the kill.
func TestAllowed(t *testing.T) {
	t0 := time.Now()
	kills := []kill{{at: t0, pid: 42, app: "web"}}
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	cases := []struct {
		name string
		r    result
		want bool
	}{
		{"POST 502 in flight at the kill", result{fail: "status 502", post: true, start: ms(-50), end: ms(5)}, true},
		{"POST 502 started just after the kill", result{fail: "status 502", post: true, start: ms(3), end: ms(6)}, true},
		{"POST 502 started long after the kill", result{fail: "status 502", post: true, start: ms(1500), end: ms(1510)}, false},
		{"POST 502 done before the kill", result{fail: "status 502", post: true, start: ms(-50), end: ms(-1)}, false},
		{"GET 502: corral should have resent it", result{fail: "status 502", start: ms(-50), end: ms(5)}, false},
		{"body cut, head from the killed pid", result{fail: "truncated", pid: 42, start: ms(-50), end: ms(5)}, true},
		{"body cut, head from another pid", result{fail: "truncated", pid: 43, start: ms(-50), end: ms(5)}, false},
		{"tunnel cut", result{fail: "tunnel broken", pid: 42, start: ms(-50), end: ms(5)}, true},
		{"upgrade 502: corral should have resent it", result{fail: "status 502", start: ms(-50), end: ms(5)}, false},
		{"closed before any head", result{fail: "closed before the head", start: ms(-50), end: ms(5)}, true},
		{"503 at a kill", result{fail: "status 503", post: true, start: ms(-50), end: ms(5)}, false},
		{"refused at a kill", result{fail: "connection refused", start: ms(-50), end: ms(5)}, false},
		{"timeout at a kill", result{fail: "timeout", start: ms(-50), end: ms(5)}, false},
		{"wrong body at a kill", result{fail: "body hash differs", post: true, pid: 42, start: ms(-50), end: ms(5)}, false},
	}
	for _, c := range cases {
		if got := allowed(c.r, kills, time.Second); got != c.want {
			t.Errorf("%s: allowed %v, want %v", c.name, got, c.want)
		}
	}
}
