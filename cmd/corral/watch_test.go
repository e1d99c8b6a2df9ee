package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// metric returns the value of the series name{labels} in a Prometheus text
// exposition, and whether it is there. labels is the exact label text
// (`app="web",worker="web-1"`), "" for none.
func metric(text, name, labels string) (float64, bool) {
	series := name
	if labels != "" {
		series += "{" + labels + "}"
	}
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// workerGet fetches path from a worker's own port, past corral.
func workerGet(t *testing.T, port int, path string) string {
	t.Helper()
	return getText(t, fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
}

// processApp is webApp with two workers, each the child of `sh -c`, so
// the worker's process group has two processes and its leader is the
// shell; extra is added to the app block.
func processApp(extra string) string {
	const command = `  command       = ["{testapp}"]`
	app := webApp(2, "one", "")
	if !strings.Contains(app, command) {
		panic("webApp has no " + command)
	}
	return strings.Replace(app, command, `  command       = ["sh", "-c", "{testapp}; exit $?"]`+"\n"+extra, 1)
}

// TestWorkerProcessMetrics: a worker (the child of `sh -c`) that allocates
// 100 MiB shows it in corral_worker_memory_bytes and /status, the other
// worker does not; CPU seconds grow for a worker kept busy and never go
// back when it is replaced; requests_total says N after N requests.
func TestWorkerProcessMetrics(t *testing.T) {
	c := newCorral(t, processApp(""))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })
	ports := map[string]int{}
	for _, w := range c.app("web").Workers {
		ports[w.ID] = w.Port
	}

	const n = 37
	client := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < n; i++ {
		if _, code, err := c.get(client, "/"); err != nil || code != 200 {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}
	m := getText(t, "http://"+c.admin+"/metrics")
	total := 0.0
	for _, id := range []string{"web-1", "web-2"} {
		v, _ := metric(m, "corral_requests_total", `app="web",code="2xx",worker="`+id+`"`)
		total += v
	}
	if total != n {
		t.Errorf("corral_requests_total 2xx over both workers = %v after %d requests", total, n)
	}
	// The client's keep-alive connection is still open.
	active, _ := metric(m, "corral_client_connections", `state="active"`)
	idle, _ := metric(m, "corral_client_connections", `state="idle"`)
	if active+idle < 1 {
		t.Errorf("corral_client_connections active %v idle %v with a keep-alive client connected", active, idle)
	}

	// 100 MiB in web-1, straight to its port.
	if got := strings.TrimSpace(workerGet(t, ports["web-1"], "/alloc?mib=100")); got != "web-1" {
		t.Fatalf("/alloc answered by %q", got)
	}
	const mib = 1 << 20
	var mem1, mem2 float64
	waitFor(t, 15*time.Second, "web-1's memory at 100 MiB in metrics", func() bool {
		m := getText(t, "http://"+c.admin+"/metrics")
		mem1, _ = metric(m, "corral_worker_memory_bytes", `app="web",worker="web-1"`)
		mem2, _ = metric(m, "corral_worker_memory_bytes", `app="web",worker="web-2"`)
		return mem1 >= 100*mib
	})
	if mem2 <= 0 || mem2 >= 60*mib {
		t.Errorf("web-2's memory = %.1f MiB, want some but well under web-1's %.1f MiB", mem2/mib, mem1/mib)
	}
	for _, w := range c.app("web").Workers {
		if w.ID == "web-1" && w.MemoryBytes < 100*mib {
			t.Errorf("/status memory_bytes of web-1 = %d", w.MemoryBytes)
		}
	}

	// CPU: web-2 spends 1.5 s of CPU time.
	cpuOf := func(id string) float64 {
		v, ok := metric(getText(t, "http://"+c.admin+"/metrics"), "corral_worker_cpu_seconds_total", `app="web",worker="`+id+`"`)
		if !ok {
			t.Fatalf("no corral_worker_cpu_seconds_total for %s", id)
		}
		return v
	}
	before := cpuOf("web-2")
	workerGet(t, ports["web-2"], "/spin?ms=1500")
	var after float64
	waitFor(t, 15*time.Second, "web-2's CPU seconds to grow by 1.4 s", func() bool {
		after = cpuOf("web-2")
		return after-before >= 1.4
	})
	t.Logf("web-2's CPU seconds %.2f -> %.2f for 1.5 s of CPU spent", before, after)
	if after-before > 3 {
		t.Errorf("web-2's CPU seconds grew by %.2f for 1.5 s of spinning", after-before)
	}

	// Replaced, the slot's counter goes on from where it was.
	resp, err := http.Post("http://"+c.admin+"/workers/web-2/restart", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("restart web-2: %d", resp.StatusCode)
	}
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		if v := cpuOf("web-2"); v < after {
			t.Fatalf("CPU seconds of web-2 went back from %.2f to %.2f after its replacement", after, v)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestQueueWaitHistogram: with one worker taking one request at a time,
// requests sent while it is busy wait in the queue, and the histogram's
// count says how many did.
func TestQueueWaitHistogram(t *testing.T) {
	c := newCorral(t, processApp("  max_inflight = 1\n"))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })
	if v, ok := metric(getText(t, "http://"+c.admin+"/metrics"), "corral_queue_wait_seconds_count", `app="web"`); !ok || v != 0 {
		t.Fatalf("corral_queue_wait_seconds_count before = %v (present %v)", v, ok)
	}
	// Two occupy both workers, then five more queue behind them.
	var wg sync.WaitGroup
	fire := func(k int) {
		for i := 0; i < k; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := &http.Client{Timeout: 20 * time.Second}
				if _, code, err := c.get(client, "/slow?ms=700"); err != nil || code != 200 {
					t.Errorf("slow request: %d %v", code, err)
				}
			}()
		}
	}
	fire(2)
	waitFor(t, 5*time.Second, "both workers busy", func() bool { return c.inflight("web-1")+c.inflight("web-2") == 2 })
	fire(5)
	waitFor(t, 5*time.Second, "5 queued", func() bool {
		v, _ := metric(getText(t, "http://"+c.admin+"/metrics"), "corral_queue_depth", `app="web"`)
		return v == 5
	})
	wg.Wait()
	m := getText(t, "http://"+c.admin+"/metrics")
	count, _ := metric(m, "corral_queue_wait_seconds_count", `app="web"`)
	sum, _ := metric(m, "corral_queue_wait_seconds_sum", `app="web"`)
	if count != 5 {
		t.Errorf("corral_queue_wait_seconds_count = %v, want 5 (the queued requests)", count)
	}
	// Two waited one slow request (~0.7 s), two waited two, one three.
	if sum < 5*0.5 || sum > 5*3 {
		t.Errorf("corral_queue_wait_seconds_sum = %.2f s for 5 requests queued behind 0.7 s ones", sum)
	}
	if fast, _ := metric(m, "corral_queue_wait_seconds_bucket", `app="web",le="0.25"`); fast != 0 {
		t.Errorf("%v queued requests waited under 0.25 s behind 0.7 s requests", fast)
	}
}

// TestAccessLogToggledByReload: off by default, log.access = true in the
// file and a SIGHUP turn the access log on for the next request, in
// JSON when log.format = "json".
func TestAccessLogToggledByReload(t *testing.T) {
	cfg := func(access string) string {
		return strings.Replace(processApp(""), `log { level = "debug" }`, "log {\n  format = \"json\"\n"+access+"}", 1)
	}
	c := newCorral(t, cfg(""))
	c.waitReady(30 * time.Second)
	client := &http.Client{Timeout: 5 * time.Second}
	accessLines := func() []map[string]any {
		var out []map[string]any
		for _, line := range strings.Split(c.logText(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["@module"] == "corral.proxy.access" {
				out = append(out, m)
			}
		}
		return out
	}
	if _, code, err := c.get(client, "/?off"); err != nil || code != 200 {
		t.Fatalf("GET: %d %v", code, err)
	}
	if n := len(accessLines()); n != 0 {
		t.Fatalf("%d access lines with log.access unset", n)
	}
	c.writeConfig(cfg("  access = true\n"))
	c.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "an access line after the reload", func() bool {
		c.get(client, "/on")
		return len(accessLines()) > 0
	})
	m := accessLines()[0]
	for k, want := range map[string]any{"app": "web", "method": "GET", "path": "/on", "status": 200.0, "client": "127.0.0.1"} {
		if m[k] != want {
			t.Errorf("access line %s = %v, want %v (%v)", k, m[k], want, m)
		}
	}
	if w, _ := m["worker"].(string); !strings.HasPrefix(w, "web-") {
		t.Errorf("access line worker = %v", m["worker"])
	}
	if id, _ := m["request_id"].(string); id == "" {
		t.Errorf("access line without a request id: %v", m)
	}
}
