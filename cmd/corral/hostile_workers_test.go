package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// Hostile and broken workers (issue #15): each test runs a real corral
// with a well-behaved app "web" beside the hostile one, and checks both
// what the hostile one gets and that "web" never noticed.

// hostileConfig is "web" (2 workers) plus extra, with h2c on the public port.
func hostileConfig(extra string) string {
	return `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
proxy { h2c = true }
app "web" {
  command      = ["{testapp}"]
  instances    = 2
  stop_timeout = "5s"
}
` + extra
}

// getBody fetches url and returns the status, the whole body and the
// error of reading it.
func getBody(client *http.Client, url string) (int, []byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// checkLoad fails t unless the load on "web" saw no failure.
func checkLoad(t *testing.T, what string, res loadResult) {
	t.Helper()
	t.Logf("load on web %s: %d ok, %d failed", what, res.OK, res.Failed)
	if res.Failed > 0 || res.OK == 0 {
		t.Errorf("load on web %s: %d ok, %d failed, want every request ok: %v", what, res.OK, res.Failed, res.Errors)
	}
}

// TestHostileGarbageAnswersAre502: every kind of answer that is not a
// valid HTTP response gets a 502 from corral, and the app's next normal
// request is answered; "web" under load meanwhile sees no failure.
func TestHostileGarbageAnswersAre502(t *testing.T) {
	c := newCorral(t, hostileConfig(`
app "bad" {
  command      = ["{testapp}"]
  instances    = 2
  path_prefix  = "/bad"
  strip_prefix = true
}
`))
	c.waitReady(30 * time.Second)
	stop := c.runLoad(4, 60*time.Second)
	client := &http.Client{Timeout: 10 * time.Second}
	kinds := []string{"binary", "status999", "statusword", "nocolon", "badlength", "twolengths", "hugeheader", "nothing", "headonly"}
	for name, cl := range map[string]*http.Client{"http1": client, "h2c": h2cClient()} {
		for _, kind := range kinds {
			for range 3 {
				code, body, err := getBody(cl, "http://"+c.public+"/bad/garbage?kind="+kind)
				if err != nil || code != http.StatusBadGateway {
					t.Errorf("%s garbage %s: status %d body %.80q err %v, want a whole 502", name, kind, code, body, err)
				}
			}
		}
	}
	waitFor(t, 10*time.Second, "a normal request to bad answered", func() bool {
		code, _, err := getBody(client, "http://"+c.public+"/bad/")
		return err == nil && code == 200
	})
	checkLoad(t, "while bad answered garbage", stop())
	if code, _, err := getBody(client, "http://"+c.public+"/bad/garbage?kind=nope"); err != nil || code != 404 {
		t.Errorf("unknown garbage kind: %d %v, want the worker's own 404 (the test app routes)", code, err)
	}
}

// h2cClient speaks HTTP/2 with prior knowledge over plain TCP.
func h2cClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}}
}

// TestHostileWorkerClosesMidResponse: a worker that declares a 1 MiB body
// (Content-Length or chunked) and closes after half of it: the client's
// response is aborted on HTTP/1.1 and on HTTP/2, never completed as if
// whole, and the next request is answered.
func TestHostileWorkerClosesMidResponse(t *testing.T) {
	c := newCorral(t, hostileConfig(""))
	c.waitReady(30 * time.Second)
	clients := map[string]*http.Client{
		"http1": {Timeout: 10 * time.Second},
		"h2c":   h2cClient(),
	}
	for _, name := range []string{"http1", "h2c"} {
		client := clients[name]
		for _, q := range []string{"", "?chunked=1"} {
			code, body, err := getBody(client, "http://"+c.public+"/cut"+q)
			if err == nil || code != 200 || len(body) >= 1<<20 {
				t.Errorf("%s /cut%s: status %d, %d body bytes, read error %v; want the 200 head, then an aborted body",
					name, q, code, len(body), err)
			}
			t.Logf("%s /cut%s: %d, %d bytes, then %v", name, q, code, len(body), err)
		}
		if code, _, err := getBody(client, "http://"+c.public+"/"); err != nil || code != 200 {
			t.Errorf("%s: next request %d %v, want 200", name, code, err)
		}
	}
	// On HTTP/1.1 the abort is a closed connection: read it raw, so a
	// proxy that ended the chunked body with its last chunk is caught too
	// (Connection: close, so such an end closes at once rather than idle).
	conn, err := net.Dial("tcp", c.public)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /cut?chunked=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	raw, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading the raw response: %v", err)
	}
	if strings.HasSuffix(string(raw), "0\r\n\r\n") || !strings.HasPrefix(string(raw), "HTTP/1.1 200") {
		t.Errorf("raw chunked response (%d bytes) starts %.40q, ends %q: want a 200 cut short, without the last chunk",
			len(raw), raw, raw[max(0, len(raw)-10):])
	}
}

// groupMembers returns the pids whose process group is pgid, except pgid.
func groupMembers(pgid int) []int {
	var pids []int
	for _, p := range readProcs() {
		if p.pgid == pgid && p.pid != pgid {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// bombLoops bounds the forking worker: each loop starts a sleep and a
// shell that starts two more, so it makes 4 processes a loop, 400 in all;
// many, and bounded (never an unbounded bomb on a shared machine).
const bombLoops = 100

// TestHostileForkingWorkerContained: a worker that forks 400 processes
// keeps them all in its process group; restarting it leaves none of them,
// and "web" under load sees no failure.
func TestHostileForkingWorkerContained(t *testing.T) {
	c := newCorral(t, hostileConfig(fmt.Sprintf(`
app "bomb" {
  command      = ["/bin/sh", "-c", "i=0; while [ $i -lt %d ]; do sleep 300 & sh -c 'sleep 300 & sleep 300' & i=$((i+1)); done; exec \"$0\"", "{testapp}"]
  instances    = 1
  path_prefix  = "/bomb"
  strip_prefix = true
  stop_timeout = "1s"
}
`, bombLoops)))
	c.waitReady(30 * time.Second)
	stop := c.runLoad(4, 60*time.Second)
	pid := c.readyPIDs("bomb")["bomb-1"]
	var members []int
	waitFor(t, 20*time.Second, fmt.Sprintf("%d processes in the bomb's group", 4*bombLoops), func() bool {
		members = groupMembers(pid)
		return len(members) >= 4*bombLoops
	})
	t.Logf("bomb-1 (pid %d): %d processes in its group", pid, len(members))
	for _, p := range descendants(pid) {
		if p.pgid != pid {
			t.Errorf("process %d (%s) below the bomb worker is in group %d, not the worker's", p.pid, p.comm, p.pgid)
		}
	}
	if code := c.restartWorker("bomb-1", 20*time.Second); code/100 != 2 {
		t.Fatalf("POST /workers/bomb-1/restart: %d", code)
	}
	// The restart answers once the old worker is stopped.
	left := slices.DeleteFunc(append([]int{pid}, members...), processGone)
	if len(left) > 0 {
		t.Errorf("%d of the old bomb worker's %d processes left after its restart: %v", len(left), len(members)+1, left[:min(len(left), 10)])
	}
	waitFor(t, 20*time.Second, "a new bomb worker ready", func() bool {
		p := c.readyPIDs("bomb")["bomb-1"]
		return p != 0 && p != pid
	})
	checkLoad(t, "while bomb forked and was replaced", stop())
}

// poll reports whether cond held within timeout, for a test that goes on
// to check more when it did not.
func poll(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// restartWorker asks for a zero-downtime replace of worker id and returns
// the status, once corral answers (after the roll).
func (c *corralProc) restartWorker(id string, timeout time.Duration) int {
	c.t.Helper()
	client := &http.Client{Timeout: timeout}
	resp, err := client.Post("http://"+c.admin+"/workers/"+id+"/restart", "", nil)
	if err != nil {
		c.t.Fatalf("POST /workers/%s/restart: %v", id, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// cpuTicks returns the user and system CPU time of pid, in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// rss returns the resident memory of pid, in bytes.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	kb, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return kb << 10
}

// latencies times n requests to "/" one after the other; it fails t on
// any that does not answer 200.
func (c *corralProc) latencies(n int) []time.Duration {
	c.t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	var out []time.Duration
	for range n {
		start := time.Now()
		code, _, err := getBody(client, "http://"+c.public+"/")
		if err != nil || code != 200 {
			c.t.Errorf("GET / during the flood: %d %v", code, err)
			continue
		}
		out = append(out, time.Since(start))
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestHostileOutputFlood: a worker floods its stdout with lines and
// writes one endless line on its stderr, both for 3 s. corral's memory
// stays bounded, the proxy keeps answering, at most the output block's
// lines reach the log, and the dropped lines are counted in /metrics and
// summed up in the log.
func TestHostileOutputFlood(t *testing.T) {
	c := prepareCorral(t)
	logFile, err := os.Create(filepath.Join(c.dir, "corral.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	c.logFile = logFile // megabytes of log must not go through the test's memory
	c.writeConfig(hostileConfig(`
app "loud" {
  command      = ["{testapp}"]
  instances    = 1
  path_prefix  = "/loud"
  strip_prefix = true
  output {
    lines_per_second = 200
    burst            = 1000
  }
}
`))
	c.start()
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "loud ready", func() bool { return len(c.readyPIDs("loud")) == 1 })
	corralPID := c.cmd.Process.Pid
	before := c.latencies(50)
	rssBefore := rss(t, corralPID)
	cpuBefore := cpuTicks(t, corralPID)

	const floodMS = 3000
	flooded := make(chan string, 2)
	for _, q := range []string{"", "&endless=1"} {
		go func() {
			client := &http.Client{Timeout: 20 * time.Second}
			code, body, err := getBody(client, fmt.Sprintf("http://%s/loud/flood?ms=%d%s", c.public, floodMS, q))
			flooded <- fmt.Sprintf("flood%s: %d %s %v", q, code, strings.TrimSpace(string(body)), err)
		}()
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "the flood under way", func() bool {
		b, _ := os.ReadFile(logFile.Name())
		return strings.Contains(string(b), "flooding the log with one line after another")
	})
	during := c.latencies(100)
	var rssMax int64
	for time.Since(start) < floodMS*time.Millisecond {
		rssMax = max(rssMax, rss(t, corralPID))
		time.Sleep(100 * time.Millisecond)
	}
	for range 2 {
		select {
		case r := <-flooded:
			t.Log(r)
			if !strings.Contains(r, ": 200 ") {
				t.Errorf("%s, want 200 and the bytes written", r)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the floods did not end")
		}
	}
	cpuFlood := cpuTicks(t, corralPID) - cpuBefore
	// The summary comes dropReportEvery (5 s) after the first drop.
	summed := poll(10*time.Second, func() bool {
		b, _ := os.ReadFile(logFile.Name())
		return strings.Contains(string(b), "worker output over its bounds")
	})
	rssAfter := rss(t, corralPID)
	m := getText(t, "http://"+c.admin+"/metrics")
	dropped, _ := metric(m, "corral_worker_log_lines_dropped_total", `app="loud",reason="rate",worker="loud-1"`)
	truncated, _ := metric(m, "corral_worker_log_lines_dropped_total", `app="loud",reason="truncated",worker="loud-1"`)
	data, _ := os.ReadFile(logFile.Name())
	logged := strings.Count(string(data), "flooding the log with one line after another")
	median := func(d []time.Duration) time.Duration { return d[len(d)/2] }
	t.Logf("corral RSS %d MiB before, %d MiB at most during, %d MiB after; log %d KiB, %d flood lines logged, %v dropped, %v truncated",
		rssBefore>>20, rssMax>>20, rssAfter>>20, len(data)>>10, logged, dropped, truncated)
	t.Logf("GET / median %v before, %v during (slowest %v); corral used %d clock ticks of CPU over the flood",
		median(before), median(during), during[len(during)-1], cpuFlood)
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "worker output over its bounds") {
			t.Logf("summary: %s", l)
		}
	}

	if !summed {
		t.Error("no summary of the dropped lines in the log")
	}
	if dropped == 0 {
		t.Error("corral_worker_log_lines_dropped_total{reason=rate} is 0 after a flood")
	}
	if truncated != 1 {
		t.Errorf("corral_worker_log_lines_dropped_total{reason=truncated} is %v after one endless line, want 1", truncated)
	}
	// The bucket lets a burst and then a rate through, per worker process;
	// a little slack for the clock. (Bounds well below the defaults, so
	// that a race-built corral on a busy machine, which logs more slowly
	// than the worker writes and so slows it down, still drops lines.)
	if most := 1000 + 200*(floodMS/1000+2); logged > most {
		t.Errorf("%d flood lines reached the log, want at most %d (burst + rate)", logged, most)
	}
	// What reached the log: the bounded lines, one cut piece of the
	// endless line and the summaries, not gigabytes.
	if len(data) > 8<<20 {
		t.Errorf("corral logged %d MiB for the flood, want < 8 MiB", len(data)>>20)
	}
	// The /logs ring keeps 256 KiB of lines an app, each cut at 2 KiB.
	if ring := getText(t, "http://"+c.admin+"/logs?app=loud&lines=1000"); len(ring) > 300<<10 {
		t.Errorf("GET /logs?app=loud answered %d KiB, want the ring's bound (256 KiB)", len(ring)>>10)
	}
	if rssMax-rssBefore > 64<<20 {
		t.Errorf("corral's RSS grew by %d MiB during the flood, want < 64 MiB", (rssMax-rssBefore)>>20)
	}
	// Loose on purpose: the flooding workers compete for the CPU; a proxy
	// stuck behind the log would take seconds.
	if m := median(during); m > 500*time.Millisecond {
		t.Errorf("median GET / took %v during the flood (%v before)", m, median(before))
	}
}

// TestHostileWorkerIgnoringSIGTERMKilledAfterStopTimeout: replacing a
// worker that ignores SIGTERM takes its stop_timeout, then the group is
// killed; "web" under load sees no failure.
func TestHostileWorkerIgnoringSIGTERMKilledAfterStopTimeout(t *testing.T) {
	c := newCorral(t, hostileConfig(`
app "deaf" {
  command      = ["/bin/sh", "-c", "trap '' TERM; sleep 300 & exec \"$0\"", "{testapp}"]
  env          = { TESTAPP_MODE = "ignore-term" }
  instances    = 1
  path_prefix  = "/deaf"
  stop_timeout = "2s"
}
`))
	c.waitReady(30 * time.Second)
	pid := c.readyPIDs("deaf")["deaf-1"]
	var sleeper []int
	waitFor(t, 10*time.Second, "the worker's child", func() bool {
		sleeper = groupMembers(pid)
		return len(sleeper) == 1
	})
	stop := c.runLoad(2, 60*time.Second)
	// The restart answers once the roll is done: the new worker ready,
	// the old one stopped.
	start := time.Now()
	if code := c.restartWorker("deaf-1", 15*time.Second); code/100 != 2 {
		t.Fatalf("POST /workers/deaf-1/restart: %d", code)
	}
	took := time.Since(start)
	if !processGone(pid) || !processGone(sleeper[0]) {
		t.Errorf("worker %d or its child %d left after the restart", pid, sleeper[0])
	}
	stopped := regexp.MustCompile(`worker stopped: app=deaf pid=` + strconv.Itoa(pid) + ` .*took=(\S+)`)
	var m []string
	waitFor(t, 5*time.Second, "the worker stopped line in the log", func() bool {
		m = stopped.FindStringSubmatch(c.logText()) // copied from corral's stderr a moment later
		return m != nil
	})
	stopTook, err := time.ParseDuration(m[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v; the old worker's stop %v (stop_timeout 2s)", took, stopTook)
	// Upper bound: stop_timeout, the kill and its reaping, with room for a
	// race-built corral on a busy machine (a kill that never came is
	// caught above: the processes are left).
	if stopTook < 2*time.Second || stopTook > 5*time.Second {
		t.Errorf("the stop of the worker ignoring SIGTERM took %v, want stop_timeout (2s) and a little", stopTook)
	}
	checkLoad(t, "while deaf was replaced", stop())
}

// TestHostileWorkerExitingAtOnceBacksOff: a served and a background app
// whose command exits 0 at once: their restarts back off (the gaps
// grow, the count over the window stays small), /status shows them in
// backoff, and "web" is untouched.
func TestHostileWorkerExitingAtOnceBacksOff(t *testing.T) {
	spawns := filepath.Join(t.TempDir(), "spawns-")
	c := newCorral(t, hostileConfig(strings.ReplaceAll(`
app "quits" {
  command      = ["/bin/sh", "-c", "date +%s%N >> SPAWNS$CORRAL_APP; exit 0"]
  instances    = 1
  path_prefix  = "/quits"
  backoff {
    min = "100ms"
    max = "800ms"
  }
}
app "jobs" {
  command      = ["/bin/sh", "-c", "date +%s%N >> SPAWNS$CORRAL_APP; exit 0"]
  serve        = false
  instances    = 1
  settle_time  = "500ms"
  backoff {
    min = "100ms"
    max = "800ms"
  }
}
`, "SPAWNS", spawns)))
	c.waitAdmin(20 * time.Second)
	waitFor(t, 20*time.Second, "web ready", func() bool { return len(c.readyPIDs("web")) == 2 })
	stop := c.runLoad(2, 60*time.Second)
	window := 4 * time.Second
	sawBackoff := map[string]bool{}
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, app := range []string{"quits", "jobs"} {
			for _, w := range c.app(app).Workers {
				sawBackoff[app] = sawBackoff[app] || w.State == "backoff"
			}
		}
	}
	checkLoad(t, "while quits and jobs exited in a loop", stop())
	for _, app := range []string{"quits", "jobs"} {
		data, err := os.ReadFile(spawns + app)
		if err != nil {
			t.Fatalf("%s never started: %v", app, err)
		}
		var times []int64
		for _, f := range strings.Fields(string(data)) {
			n, _ := strconv.ParseInt(f, 10, 64)
			times = append(times, n)
		}
		var gaps []time.Duration
		for i := 1; i < len(times); i++ {
			gaps = append(gaps, time.Duration(times[i]-times[i-1]).Round(time.Millisecond))
		}
		t.Logf("%s: %d starts in %v, gaps %v", app, len(times), window, gaps)
		// 100ms doubling to 800ms, ±20%: over 4 s at most about 8 starts
		// (0.1+0.2+0.4+0.8+0.8...); a loop without backoff makes hundreds.
		if len(times) < 4 || len(times) > 12 {
			t.Errorf("%s started %d times in %v, want 4..12 (backing off)", app, len(times), window)
		}
		// Lower bounds only (a busy machine only makes gaps longer): the
		// 4th gap on is at least 800ms minus jitter.
		for i, g := range gaps {
			if want := min(100<<i, 800) * int(time.Millisecond) * 8 / 10; int(g) < want {
				t.Errorf("%s gap %d is %v, want >= %v (backoff not growing?)", app, i, g, time.Duration(want))
			}
		}
		if !sawBackoff[app] {
			t.Errorf("%s never shown in state backoff in /status", app)
		}
		restarts := 0
		for _, w := range c.app(app).Workers {
			restarts += w.Restarts
		}
		if restarts < len(times)-2 {
			t.Errorf("%s: /status counts %d restarts for %d starts", app, restarts, len(times))
		}
	}
}

// TestHostileBlockedLogOutput: corral's own stderr is a pipe nobody reads
// (a stuck log collector). Once the pipe is full, requests that each log
// an access line and make the worker print a line are still answered;
// /metrics counts the lines dropped, and when the pipe is read again,
// corral says how many in its log.
func TestHostileBlockedLogOutput(t *testing.T) {
	c := prepareCorral(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c.logFile = w
	c.writeConfig(hostileConfig("") + "log { access = true }\n")
	c.start()
	w.Close() // corral has its copy
	c.waitReady(30 * time.Second)

	// 2000 requests, each an access line and a worker line of 1 KiB: a few
	// MiB of log, far past the pipe's 64 KiB and corral's buffer.
	msg := strings.Repeat("m", 1024)
	start := time.Now()
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			client := &http.Client{Timeout: 5 * time.Second}
			defer client.CloseIdleConnections()
			for range 500 {
				code, _, err := getBody(client, "http://"+c.public+"/say?msg="+msg)
				if err == nil && code != 200 {
					err = fmt.Errorf("status %d", code)
				}
				var ue *url.Error
				if errors.As(err, &ue) {
					err = ue.Err // without the long URL
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("request while corral's log output is blocked: %v", err)
		}
	}
	t.Logf("2000 logging requests with the log output blocked: %v", time.Since(start))
	if v, ok := metric(getText(t, "http://"+c.admin+"/metrics"), "corral_log_lines_dropped_total", ""); !ok || v == 0 {
		t.Errorf("corral_log_lines_dropped_total = %v (present %v) with the log output blocked, want > 0", v, ok)
	} else {
		t.Logf("corral_log_lines_dropped_total %v", v)
	}

	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "log lines dropped") {
				found <- sc.Text()
				return
			}
		}
		found <- ""
	}()
	// A line more, so that the notice is due even if every drop came before the pipe was read.
	getBody(&http.Client{Timeout: 5 * time.Second}, "http://"+c.public+"/")
	select {
	case line := <-found:
		t.Logf("notice: %s", line)
		if line == "" {
			t.Error("no notice of the dropped log lines")
		}
	case <-time.After(10 * time.Second):
		t.Error("no notice of the dropped log lines within 10 s of reading the log again")
	}
}
