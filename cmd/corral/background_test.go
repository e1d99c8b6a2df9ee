package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// jobsApp is a background app in sh: it exits 3 at once while the file
// crash exists in dir, else it runs until SIGTERM, on which it writes
// term-$CORRAL_WORKER into dir and exits 0. It records whether PORT was set.
const jobsApp = `
app "jobs" {
  command      = ["sh", "-c", "echo \"port=[$PORT]\" > %[1]s/env-$CORRAL_WORKER; [ -e %[1]s/crash ] && exit 3; trap 'echo done > %[1]s/term-$CORRAL_WORKER; exit 0' TERM; while :; do sleep 0.05; done"]
  serve        = false
  settle_time  = "300ms"
  instances    = 1
  stop_timeout = "5s"
  backoff {
    min = "100ms"
    max = "400ms"
  }
}
`

// TestCrashingBackgroundAppBacksOffWhileTheWebAppServes runs a background
// app that crashes on start: it is restarted with backoff (cause crash),
// /readyz names it, and the web app keeps serving with zero failed
// requests. Once it stops crashing it is ready after its settle time, with
// no port and no PORT; at shutdown it gets SIGTERM and exits on its own.
func TestCrashingBackgroundAppBacksOffWhileTheWebAppServes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "crash"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCorral(t, webApp(2, "one", "")+strings.ReplaceAll(jobsApp, "%[1]s", dir))
	c.waitAdmin(20 * time.Second)
	waitFor(t, 20*time.Second, "2 ready web workers", func() bool { return len(c.readyPIDs("web")) == 2 })
	stop := c.runLoad(2, 60*time.Second)

	sawBackoff := false
	waitFor(t, 20*time.Second, "jobs-1 restarted 3 times with backoff", func() bool {
		for _, w := range c.app("jobs").Workers {
			sawBackoff = sawBackoff || w.State == "backoff"
			return sawBackoff && w.ByCause["crash"] >= 3
		}
		return false
	})
	resp, err := http.Get("http://" + c.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/readyz with jobs crashing: %d, want 503", resp.StatusCode)
	}

	os.Remove(filepath.Join(dir, "crash"))
	waitFor(t, 20*time.Second, "jobs-1 ready", func() bool {
		a := c.app("jobs")
		return a.Ready == 1 && len(a.Workers) == 1 && a.Workers[0].State == "ready"
	})
	w := c.app("jobs").Workers[0]
	if w.Port != 0 {
		t.Errorf("background worker has port %d, want none", w.Port)
	}
	if uptime := time.Since(w.StartedAt); uptime < 300*time.Millisecond {
		t.Errorf("jobs-1 ready after %s, before its settle_time", uptime)
	}
	if env, _ := os.ReadFile(filepath.Join(dir, "env-jobs-1")); strings.TrimSpace(string(env)) != "port=[]" {
		t.Errorf("background worker's PORT: %q, want unset", env)
	}
	resp, err = http.Get("http://" + c.admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/readyz with jobs up: %d, want 200", resp.StatusCode)
	}
	requireNoFailures(t, "web while jobs crashed", stop())

	c.signal(syscall.SIGTERM)
	if code := c.wait(30 * time.Second); code != 0 {
		t.Fatalf("corral exited %d after SIGTERM", code)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "term-jobs-1")); err != nil || strings.TrimSpace(string(b)) != "done" {
		t.Errorf("jobs-1 did not handle SIGTERM at shutdown: %q %v", b, err)
	}
	if strings.Contains(c.logText(), "did not stop in time") {
		t.Errorf("a worker had to be killed at shutdown")
	}
}
