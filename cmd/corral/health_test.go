package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFailingAndHangingWorkersLeaveAndReturnWithoutErrors(t *testing.T) {
	switches := t.TempDir()
	c := newCorral(t, strings.ReplaceAll(`
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "web" {
  command   = ["{testapp}"]
  env       = { SWITCH_DIR = "SWITCHES" }
  instances = 4
  health {
    path                = "/healthz"
    interval            = "300ms"
    timeout             = "300ms"
    healthy_threshold   = 2
    unhealthy_threshold = 2
    restart_after       = "0s"
  }
}
`, "SWITCHES", switches))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "4 ready workers", func() bool { return len(c.readyPIDs("web")) == 4 })
	before := c.readyPIDs("web")

	stop := c.runLoad(4, 60*time.Second)
	flip := func(name string, on bool) {
		path := filepath.Join(switches, name)
		if on {
			os.WriteFile(path, nil, 0o644)
		} else {
			os.Remove(path)
		}
	}
	flip("fail-web-1", true)
	flip("hang-web-2", true)
	reasons := map[string]string{}
	waitFor(t, 20*time.Second, "web-1 and web-2 out of rotation", func() bool {
		for _, w := range c.app("web").Workers {
			reasons[w.ID] = w.State + ": " + w.Reason
		}
		return strings.HasPrefix(reasons["web-1"], "unhealthy") && strings.HasPrefix(reasons["web-2"], "unhealthy")
	})
	if !strings.Contains(reasons["web-1"], "503") {
		t.Errorf("web-1 reason %q does not name the status", reasons["web-1"])
	}
	if !strings.Contains(reasons["web-2"], "timeout") {
		t.Errorf("web-2 reason %q does not name the timeout", reasons["web-2"])
	}
	// While they are out, every request lands on web-3 and web-4.
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 20; i++ {
		r, code, err := c.get(client, "/")
		if err != nil || code != 200 || (r.Worker != "web-3" && r.Worker != "web-4") {
			t.Fatalf("request went to %q (%d, %v) while web-1/web-2 are unhealthy", r.Worker, code, err)
		}
	}
	flip("fail-web-1", false)
	flip("hang-web-2", false)
	waitFor(t, 20*time.Second, "both back in rotation", func() bool { return len(c.readyPIDs("web")) == 4 })
	requireNoFailures(t, "one failing and one hanging worker", stop())
	if now := c.readyPIDs("web"); fmt.Sprint(now) != fmt.Sprint(before) {
		t.Errorf("workers were restarted although restart_after is off: %v -> %v", before, now)
	}
}

func TestSingleThreadedWorkersNeverSeeTwoRequests(t *testing.T) {
	c := newCorral(t, `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "web" {
  command      = ["{testapp}"]
  instances    = 4
  max_inflight = 1
  queue {
    size    = 64
    timeout = "20s"
  }
}
`)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "4 ready workers", func() bool { return len(c.readyPIDs("web")) == 4 })

	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			resp, err := client.Get("http://" + c.public + "/slow?ms=40")
			if err != nil {
				errs <- err.Error()
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Sprintf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("burst request failed: %s", e)
	}
	for _, w := range c.app("web").Workers {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/concurrency", w.Port))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if most := strings.TrimSpace(string(body)); most != "1" {
			t.Errorf("worker %s saw %s requests at once, want 1", w.ID, most)
		}
	}
}
