package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// dropper is a worker that reads a request and closes the connection
// without answering (a worker killed mid-request). It records its name in
// hits for every request it dropped.
func dropper(t *testing.T, name string, hits *hitLog) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						hits.add(name)
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

type hitLog struct {
	mu   sync.Mutex
	hits []string
}

func (h *hitLog) add(s string) {
	h.mu.Lock()
	h.hits = append(h.hits, s)
	h.mu.Unlock()
}

func (h *hitLog) list() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.hits...)
}

func okBackend(t *testing.T, name string, hits *hitLog) string {
	return addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		hits.add(name)
		_, _ = w.Write([]byte(name))
	}))
}

func retryProxy(t *testing.T, app *config.App, addrs ...string) (*appFixture, string) {
	p := newTestProxy(t, testSettings())
	f := newFixture(p, app, addrs...)
	setApps(p, f)
	return f, startProxy(t, p)
}

func roundRobinApp() *config.App {
	app := testApp("web")
	app.Balance = config.BalanceRoundRobin
	return app
}

func do(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	_, _ = bufio.NewReader(resp.Body).WriteTo(b)
	return resp.StatusCode, b.String()
}

func TestRefusedWorkerIsRetriedForPost(t *testing.T) {
	var hits hitLog
	got := make(chan string, 1)
	good := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		b := new(strings.Builder)
		_, _ = bufio.NewReader(r.Body).WriteTo(b)
		got <- b.String()
		hits.add("good")
	}))
	f, url := retryProxy(t, roundRobinApp(), refusedAddr(t), good)
	code, _ := do(t, client(t), "POST", url+"/", "payload")
	if code != 200 {
		t.Fatalf("POST answered %d, want 200 after retry", code)
	}
	if b := <-got; b != "payload" {
		t.Fatalf("retried body %q", b)
	}
	if f.stats.Retries.Load() != 1 {
		t.Fatalf("retries %d, want 1", f.stats.Retries.Load())
	}
	if f.backends()[0].Inflight.Load() != 0 || f.backends()[1].Inflight.Load() != 0 {
		t.Fatal("inflight not released")
	}
}

func TestDroppedGetIsRetriedElsewhere(t *testing.T) {
	var hits hitLog
	f, url := retryProxy(t, roundRobinApp(), dropper(t, "drop", &hits), okBackend(t, "good", &hits))
	code, body := do(t, client(t), "GET", url+"/", "")
	if code != 200 || body != "good" {
		t.Fatalf("GET answered %d %q", code, body)
	}
	if h := hits.list(); len(h) != 2 || h[0] != "drop" {
		t.Fatalf("hits %v, want drop then good", h)
	}
	if f.stats.Retries.Load() != 1 {
		t.Fatalf("retries %d", f.stats.Retries.Load())
	}
}

func TestPostNotRetriedAfterSend(t *testing.T) {
	var hits hitLog
	f, url := retryProxy(t, roundRobinApp(), dropper(t, "drop", &hits), okBackend(t, "good", &hits))
	code, body := do(t, client(t), "POST", url+"/", "x")
	if code != 502 || body != "502 bad gateway\n" {
		t.Fatalf("POST answered %d %q, want 502", code, body)
	}
	if h := hits.list(); len(h) != 1 || h[0] != "drop" {
		t.Fatalf("hits %v, want only drop", h)
	}
	if f.backends()[0].Stats.Errors.Load() != 1 {
		t.Fatal("proxy error not counted on the worker")
	}
}

func TestPostWithIdempotencyKeyIsRetried(t *testing.T) {
	var hits hitLog
	_, url := retryProxy(t, roundRobinApp(), dropper(t, "drop", &hits), okBackend(t, "good", &hits))
	req, _ := http.NewRequest("POST", url+"/", strings.NewReader("x"))
	req.Header.Set("Idempotency-Key", "k1")
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("answered %d", resp.StatusCode)
	}
}

func TestRetryNeverSameWorkerTwiceInARow(t *testing.T) {
	var hits hitLog
	app := testApp("web") // least outstanding: random ties
	app.Retries = 3
	_, url := retryProxy(t, app, dropper(t, "a", &hits), dropper(t, "b", &hits))
	c := client(t)
	for range 5 {
		if code, _ := do(t, c, "GET", url+"/", ""); code != 502 {
			t.Fatalf("answered %d, want 502", code)
		}
	}
	h := hits.list()
	if len(h) != 20 {
		t.Fatalf("hits %d, want 5 requests x 4 tries", len(h))
	}
	for i := 0; i < len(h); i += 4 {
		for j := i + 1; j < i+4; j++ {
			if h[j] == h[j-1] {
				t.Fatalf("same worker twice in a row: %v", h[i:i+4])
			}
		}
	}
}

func TestRefusingWorkerIsEjected(t *testing.T) {
	var hits hitLog
	app := roundRobinApp()
	app.Passive = config.Passive{Failures: 2, BaseEjection: time.Minute, MaxEjection: time.Hour, MaxEjectedPercent: 50}
	f, url := retryProxy(t, app, refusedAddr(t), okBackend(t, "good", &hits))
	c := client(t)
	for range 10 {
		if code, _ := do(t, c, "GET", url+"/", ""); code != 200 {
			t.Fatalf("answered %d", code)
		}
	}
	bad := f.backends()[0]
	if !bad.Ejected(time.Now()) || bad.Ejections.Load() != 1 {
		t.Fatalf("refusing worker not ejected (until %d)", bad.EjectedUntil.Load())
	}
	if r := bad.LastEjectReason.Load(); r == nil || *r != "connection failed" {
		t.Fatalf("reason %v", r)
	}
	if n := f.stats.Retries.Load(); n != 2 {
		t.Fatalf("retries %d, want 2 (until ejection)", n)
	}
}

func TestEjectionCapKeepsOneOfTwo(t *testing.T) {
	app := roundRobinApp()
	app.Passive = config.Passive{Failures: 1, BaseEjection: time.Minute, MaxEjection: time.Hour, MaxEjectedPercent: 50}
	f, url := retryProxy(t, app, refusedAddr(t), refusedAddr(t))
	c := client(t)
	for range 4 {
		if code, _ := do(t, c, "GET", url+"/", ""); code != 502 {
			t.Fatalf("answered %d, want 502", code)
		}
	}
	ejected := 0
	for _, b := range f.backends() {
		if b.Ejected(time.Now()) {
			ejected++
		}
	}
	if ejected != 1 {
		t.Fatalf("%d of 2 ejected, want 1 (50%% cap)", ejected)
	}
}

func TestSlowWorkerIs504(t *testing.T) {
	s := testSettings()
	s.ResponseHeaderTimeout = 150 * time.Millisecond
	p := newTestProxy(t, s)
	slow := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	f := newFixture(p, testApp("web"), slow)
	setApps(p, f)
	url := startProxy(t, p)
	code, body := do(t, client(t), "GET", url+"/", "")
	if code != 504 || body != "504 gateway timeout\n" {
		t.Fatalf("answered %d %q", code, body)
	}
	b := f.backends()[0]
	if b.Stats.Errors.Load() != 1 || b.Stats.Status[5].Load() != 1 {
		t.Fatalf("errors %d 5xx %d", b.Stats.Errors.Load(), b.Stats.Status[5].Load())
	}
}

func TestNoBackendIs503(t *testing.T) {
	p := newTestProxy(t, testSettings())
	f := newFixture(p, testApp("web"))
	setApps(p, f)
	url := startProxy(t, p)
	c := client(t)
	req, _ := http.NewRequest("GET", url+"/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("answered %d retry-after %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if f.stats.NoBackend.Load() != 1 {
		t.Fatal("no-backend not counted")
	}
}

func TestPostAfterWorkerClosedIdleConnection(t *testing.T) {
	var closed atomic.Int64
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	be.Config.IdleTimeout = 300 * time.Millisecond // like Node's keepAliveTimeout, shorter than the proxy's
	be.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	p := newTestProxy(t, testSettings())
	f := newFixture(p, testApp("web"), addrOf(be))
	setApps(p, f)
	url := startProxy(t, p)
	c := client(t)
	for i := range 3 {
		if code, body := do(t, c, "POST", url+"/", "x"); code != 200 || body != "ok" {
			t.Fatalf("POST %d answered %d %q", i, code, body)
		}
		waitFor(t, "worker to close the idle connection", 5*time.Second, func() bool { return closed.Load() == int64(i+1) })
	}
	if b := f.backends()[0]; b.ConsecutiveFailures.Load() != 0 || b.Stats.Errors.Load() != 0 {
		t.Fatal("a closed idle connection counted against the worker")
	}
}
