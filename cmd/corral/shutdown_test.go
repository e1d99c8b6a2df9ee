package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// twoApps has a served app and a background app "gone" whose worker ignores
// SIGTERM, so stopping it takes its whole stop_timeout.
const twoApps = `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
shutdown { timeout = "8s" }
app "web" {
  command      = ["{testapp}"]
  instances    = 1
  stop_timeout = "2s"
}
app "gone" {
  command      = ["{testapp}"]
  env          = { TESTAPP_MODE = "ignore-term" }
  path_prefix  = "/gone"
  instances    = 1
  stop_timeout = "4s"
}
`

func TestSIGTERMWhileARemovedAppStopsEndsCorral(t *testing.T) {
	c := newCorral(t, twoApps)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "both apps ready", func() bool {
		return len(c.readyPIDs("web")) == 1 && len(c.readyPIDs("gone")) == 1
	})
	gone := c.allPIDs("gone")

	// Remove "gone": its worker ignores SIGTERM, so its stop runs for 4 s.
	c.writeConfig(twoApps[:strings.Index(twoApps, `app "gone"`)])
	resp, err := http.Post("http://"+c.admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /reload: %d", resp.StatusCode)
	}
	waitFor(t, 5*time.Second, "gone removed from /status", func() bool {
		for _, a := range c.status().Apps {
			if a.Name == "gone" {
				return false
			}
		}
		return true
	})
	for _, pid := range gone {
		if processGone(pid) {
			t.Fatalf("removed app's worker %d already gone; the test needs it stopping", pid)
		}
	}

	start := time.Now()
	c.signal(syscall.SIGTERM)
	// shutdown.timeout is 8 s; a little margin for the exit itself.
	if code := c.wait(12 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	t.Logf("corral exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	for _, pid := range gone {
		waitFor(t, 2*time.Second, fmt.Sprintf("removed app's worker %d gone", pid), func() bool { return processGone(pid) })
	}
}

func TestSIGTERMWithAnOpenWebSocketGivesWorkersTheirStopTime(t *testing.T) {
	markers := t.TempDir()
	c := newCorral(t, strings.ReplaceAll(`
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
shutdown { timeout = "5s" }
app "web" {
  command      = ["{testapp}"]
  env          = { TESTAPP_MODE = "slow-term", MARKER_DIR = "MARKERS" }
  instances    = 1
  stop_timeout = "2s"
}
`, "MARKERS", markers))
	c.waitReady(30 * time.Second)
	ws, err := websocket.Dial("ws://"+c.public+"/ws", "", "http://"+c.public+"/")
	if err != nil {
		t.Fatalf("websocket through corral: %v", err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := ws.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(ws, buf); err != nil {
		t.Fatalf("websocket echo: %v", err)
	}

	start := time.Now()
	c.signal(syscall.SIGTERM)
	if code := c.wait(8 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	took := time.Since(start)
	t.Logf("corral exited %s after SIGTERM", took.Round(time.Millisecond))
	if took > 5*time.Second+500*time.Millisecond {
		t.Errorf("shutdown took %s, shutdown.timeout is 5s", took)
	}
	if _, err := os.Stat(filepath.Join(markers, "term-web-1")); err != nil {
		t.Errorf("the worker's SIGTERM handler did not finish: %v", err)
	}
}

func TestDrainDeadlineLeavesTheStopTime(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		timeout, stop, want time.Duration
	}{
		{10 * time.Second, 2 * time.Second, 7 * time.Second},          // 10 - 2 - 1 s margin
		{5 * time.Second, 2 * time.Second, 2 * time.Second},           // the e2e test's numbers
		{25 * time.Second, 30 * time.Second, 6250 * time.Millisecond}, // defaults: floor of a quarter
		{4 * time.Second, 3 * time.Second, time.Second},               // 0 left: the floor
	} {
		got := drainDeadline(now, now.Add(tc.timeout), tc.stop).Sub(now)
		if got != tc.want {
			t.Errorf("timeout %s, stop %s: drain %s, want %s", tc.timeout, tc.stop, got, tc.want)
		}
	}
}

func TestSIGQUITStopsGracefully(t *testing.T) {
	c := startWeb(t, 2)
	pids := c.allPIDs("web")
	c.signal(syscall.SIGQUIT)
	if code := c.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGQUIT, want 0 (a graceful stop)", code)
	}
	if log := c.log.String(); !strings.Contains(log, "shutdown requested") || strings.Contains(log, "goroutine ") {
		t.Errorf("SIGQUIT did not go through the graceful shutdown:\n%s", log)
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("worker pid %d still exists after SIGQUIT", pid)
		}
	}
}

func TestSIGTERMDuringARollEndsCorral(t *testing.T) {
	rolling := func(mode string) string {
		return fmt.Sprintf(`
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
shutdown { timeout = "6s" }
app "web" {
  command       = ["{testapp}"]
  env           = { TESTAPP_MODE = %q }
  instances     = 2
  stop_timeout  = "2s"
  start_timeout = "60s"
}
`, mode)
	}
	c := newCorral(t, rolling(""))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })

	// The replacements never get ready, so the roll waits for start_timeout.
	c.writeConfig(rolling("never-ready"))
	if res, code := postReload(t, c.admin); code != 200 || !res.Applied {
		t.Fatalf("reload: %d %+v", code, res)
	}
	waitFor(t, 10*time.Second, "the roll to run", func() bool {
		a := c.app("web")
		return a.Roll.State == "running" && len(a.Workers) > 2
	})
	pids := c.allPIDs("web")

	start := time.Now()
	c.signal(syscall.SIGTERM)
	if code := c.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	t.Logf("corral exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	for _, pid := range pids {
		waitFor(t, 2*time.Second, fmt.Sprintf("worker %d gone", pid), func() bool { return processGone(pid) })
	}
}
