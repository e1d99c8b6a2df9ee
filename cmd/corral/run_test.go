package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const threeWorkers = `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
log { level = "debug" }
shutdown { timeout = "10s" }
app "web" {
  command       = ["{testapp}"]
  instances     = 3
  env           = { GREETING = "one" }
  stop_timeout  = "5s"
  start_timeout = "20s"
  backoff {
    min = "50ms"
    max = "1s"
  }
  health {
    path                = "/healthz"
    interval            = "300ms"
    timeout             = "300ms"
    healthy_threshold   = 1
    unhealthy_threshold = 2
  }
}
`

func TestRunServesEveryWorkerAndStopsCleanly(t *testing.T) {
	c := newCorral(t, threeWorkers)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "3 ready workers", func() bool { return len(c.readyPIDs("web")) == 3 })

	app := c.app("web")
	ports := map[int]bool{}
	for _, w := range app.Workers {
		if w.PID <= 0 || w.Port <= 0 || w.StartedAt.IsZero() || w.ID == "" {
			t.Fatalf("worker status incomplete: %+v", w)
		}
		ports[w.Port] = true
	}
	if len(ports) != 3 {
		t.Fatalf("workers share ports: %+v", app.Workers)
	}

	// Keep-alive client: balancing is per request, so one connection
	// still reaches every worker.
	client := &http.Client{}
	seen := map[string]bool{}
	for i := 0; i < 60 && len(seen) < 3; i++ {
		r, code, err := c.get(client, "/")
		if err != nil || code != 200 {
			t.Fatalf("GET /: %d %v", code, err)
		}
		if r.Greeting != "one" {
			t.Fatalf("env GREETING not passed: %+v", r)
		}
		seen[r.Worker] = true
	}
	if len(seen) != 3 {
		t.Fatalf("requests reached %d workers, want 3: %v", len(seen), seen)
	}

	pids := c.allPIDs("web")
	c.signal(syscall.SIGTERM)
	if code := c.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	for _, pid := range pids {
		if !processGone(pid) {
			t.Errorf("worker pid %d still exists after shutdown", pid)
		}
	}
}

func TestKilledWorkerIsReplacedWithoutFailedRequests(t *testing.T) {
	c := newCorral(t, threeWorkers)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "3 ready workers", func() bool { return len(c.readyPIDs("web")) == 3 })
	before := c.readyPIDs("web")

	stop := c.runLoad(4, 30*time.Second)
	victim := before["web-2"]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "web-2 replaced", func() bool {
		now := c.readyPIDs("web")
		return len(now) == 3 && now["web-2"] != 0 && now["web-2"] != victim
	})
	res := stop()
	after := c.readyPIDs("web")
	if after["web-1"] != before["web-1"] || after["web-3"] != before["web-3"] {
		t.Errorf("other workers were touched: before %v after %v", before, after)
	}
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed after kill -9 of a worker: %v", res.Failed, res.OK+res.Failed, res.Errors)
	}
	if res.OK == 0 {
		t.Fatal("load sent no request")
	}
	var restarts int
	for _, w := range c.app("web").Workers {
		if w.ID == "web-2" {
			restarts = w.Restarts
		}
	}
	if restarts < 1 {
		t.Errorf("web-2 restarts = %d, want >= 1", restarts)
	}
}

func TestOrphanedGrandchildrenAreStoppedWithTheirWorker(t *testing.T) {
	pidDir := t.TempDir()
	c := newCorral(t, strings.ReplaceAll(`
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "web" {
  command      = ["sh", "-c", "sleep 300 & echo $! > PIDDIR/sleep-$CORRAL_WORKER; exec {testapp}"]
  instances    = 2
  stop_timeout = "5s"
}
`, "PIDDIR", pidDir))
	c.waitReady(30 * time.Second)
	waitFor(t, 10*time.Second, "sleep pid files", func() bool {
		m, _ := filepath.Glob(filepath.Join(pidDir, "sleep-*"))
		return len(m) == 2
	})
	var sleeps []int
	for _, id := range []string{"web-1", "web-2"} {
		data, err := os.ReadFile(filepath.Join(pidDir, "sleep-"+id))
		if err != nil {
			t.Fatal(err)
		}
		var pid int
		for _, ch := range bytes.TrimSpace(data) {
			pid = pid*10 + int(ch-'0')
		}
		sleeps = append(sleeps, pid)
	}
	for _, pid := range sleeps {
		if processGone(pid) {
			t.Fatalf("sleep %d not running before shutdown", pid)
		}
	}
	c.signal(syscall.SIGTERM)
	if code := c.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	for _, pid := range sleeps {
		if !processGone(pid) {
			t.Errorf("grandchild sleep %d survived corral's shutdown", pid)
		}
	}
}

func TestValidateReportsEveryProblemWithPosition(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	os.WriteFile(good, []byte("app \"web\" {\n  command = [\"true\"]\n}\n"), 0o644)
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("app \"web\" {\n  command = [\"true\"]\n  instances = 0\n  balance = \"fastest\"\n}\n"), 0o644)

	var out, errOut bytes.Buffer
	if code := run([]string{"validate", "-config", good}, &out, &errOut); code != 0 {
		t.Fatalf("valid config: exit %d, stderr %s", code, errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"validate", "-config", bad}, &out, &errOut); code != 1 {
		t.Fatalf("invalid config: exit %d, want 1", code)
	}
	msg := errOut.String()
	for _, want := range []string{"bad.hcl:3:", "instances", "bad.hcl:4:", "balance"} {
		if !strings.Contains(msg, want) {
			t.Errorf("validate output lacks %q:\n%s", want, msg)
		}
	}
}

func TestRunRefusesABadConfig(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("app \"web\" {\n  command = []\n}\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"run", "-config", bad}, &out, &errOut); code != 1 {
		t.Fatalf("bad config: exit %d, want 1", code)
	}
	if !strings.Contains(errOut.String(), "bad.hcl:2:") {
		t.Errorf("no position in: %s", errOut.String())
	}
}

func TestPythonHTTPServerWorksUnchanged(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required (.ci/run installs it): ", err)
	}
	c := prepareCorral(t)
	os.WriteFile(filepath.Join(c.dir, "index.html"), []byte("served by python\n"), 0o644)
	c.writeConfig(strings.ReplaceAll(`
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "static" {
  command   = ["PYTHON", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
  instances = 2
}
`, "PYTHON", python))
	c.start()
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("static")) == 2 })
	for i := 0; i < 10; i++ {
		resp, err := http.Get("http://" + c.public + "/index.html")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "served by python\n" {
			t.Fatalf("GET through corral to python: %d %q", resp.StatusCode, body)
		}
	}
	c.signal(syscall.SIGTERM)
	if code := c.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

func TestSecondSignalStopsAtOnce(t *testing.T) {
	c := newCorral(t, `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
shutdown { timeout = "60s" }
app "web" {
  command      = ["{testapp}"]
  env          = { TESTAPP_MODE = "ignore-term" }
  instances    = 2
  stop_timeout = "60s"
}
`)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })
	pids := c.allPIDs("web")
	c.signal(syscall.SIGTERM)
	// The workers ignore SIGTERM, so the graceful stop would take the
	// whole stop_timeout; wait until it is under way, then insist.
	waitFor(t, 10*time.Second, "readyz to turn 503", func() bool {
		resp, err := http.Get("http://" + c.admin + "/readyz")
		if err != nil {
			return true
		}
		resp.Body.Close()
		return resp.StatusCode == 503
	})
	start := time.Now()
	c.signal(syscall.SIGTERM)
	if code := c.wait(15 * time.Second); code != 2 {
		t.Fatalf("exit code %d after a second SIGTERM, want 2", code)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("second SIGTERM took %s to stop corral", took)
	}
	for _, pid := range pids {
		waitFor(t, 5*time.Second, fmt.Sprintf("worker %d gone", pid), func() bool { return processGone(pid) })
	}
}
