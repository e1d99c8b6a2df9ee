package deploy

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

const systemdUnit = "systemd/corral.service"

// unitSettings reads the [Service] section of a unit file: key -> values,
// in order (a key may repeat).
func unitSettings(t *testing.T, file string) map[string][]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not key=value", file, line)
			}
			out[k] = append(out[k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestSystemdUnit checks what corral relies on under systemd: the notify
// protocol, SIGHUP for reload, SIGTERM to corral alone (it stops its own
// workers' process groups), a stop timeout past corral's own bound, and a
// restart on failure.
func TestSystemdUnit(t *testing.T) {
	u := unitSettings(t, systemdUnit)
	one := func(k string) string {
		t.Helper()
		if len(u[k]) != 1 {
			t.Errorf("%s: %s set %d times, want once", systemdUnit, k, len(u[k]))
			return ""
		}
		return u[k][0]
	}
	for k, want := range map[string]string{
		"Type":         "notify",
		"NotifyAccess": "main",
		"ExecReload":   "/bin/kill -HUP $MAINPID",
		"KillMode":     "mixed",
		"KillSignal":   "SIGTERM",
		"Restart":      "on-failure",
	} {
		if got := one(k); got != want {
			t.Errorf("%s: %s=%s, want %s", systemdUnit, k, got, want)
		}
	}
	start := strings.Fields(one("ExecStart"))
	if len(start) != 4 || start[1] != "run" || start[2] != "-config" {
		t.Fatalf("ExecStart=%q, want corral run -config FILE", start)
	}
	if pre := strings.Fields(one("ExecStartPre")); len(pre) != 4 || pre[0] != start[0] || pre[1] != "validate" || pre[3] != start[3] {
		t.Errorf("ExecStartPre=%q, want %s validate -config %s", pre, start[0], start[3])
	}

	// The default shutdown.timeout, plus the grace corral allows itself to
	// kill and reap past it (cmd/corral exitGrace, 5s), must end before
	// systemd's SIGKILL.
	cfg, err := config.Parse([]byte("app \"web\" {\n  command = [\"x\"]\n}\n"), t.TempDir()+"/config.hcl")
	if err != nil {
		t.Fatal(err)
	}
	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	if stop <= cfg.Shutdown.Timeout+5*time.Second {
		t.Errorf("TimeoutStopSec=%s must exceed shutdown.timeout %s + 5s", stop, cfg.Shutdown.Timeout)
	}
	if wd, err := time.ParseDuration(one("WatchdogSec")); err != nil || wd < 2*time.Second {
		t.Errorf("WatchdogSec=%v (%v): want a watchdog corral can keep (it pings at half of it)", u["WatchdogSec"], err)
	}
	// Hardening that breaks common workers: JIT runtimes, and system calls
	// no list can foresee for every app.
	for _, k := range []string{"MemoryDenyWriteExecute", "SystemCallFilter"} {
		if _, ok := u[k]; ok {
			t.Errorf("%s sets %s, which breaks workers (see the comment in the unit)", systemdUnit, k)
		}
	}
}
