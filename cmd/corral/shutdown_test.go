package main

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
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
