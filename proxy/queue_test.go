package proxy

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// holdingBackend answers requests in order; the first request waits until
// hold is closed. It records the X-N header of every request it saw.
type holdingBackend struct {
	hold  chan struct{}
	first atomic.Bool
	mu    sync.Mutex
	seen  []string
}

func newHoldingBackend(t *testing.T) (*holdingBackend, string) {
	hb := &holdingBackend{hold: make(chan struct{})}
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		hb.mu.Lock()
		hb.seen = append(hb.seen, r.Header.Get("X-N"))
		hb.mu.Unlock()
		if hb.first.CompareAndSwap(false, true) {
			select {
			case <-hb.hold:
			case <-time.After(10 * time.Second):
			}
		}
		_, _ = w.Write([]byte("ok"))
	})
	t.Cleanup(hb.release)
	return hb, addrOf(s)
}

func (hb *holdingBackend) release() {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	select {
	case <-hb.hold:
	default:
		close(hb.hold)
	}
}

func (hb *holdingBackend) order() []string {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	return append([]string(nil), hb.seen...)
}

type result struct {
	code       int
	retryAfter string
	err        error
}

func send(ctx context.Context, c *http.Client, url string, n int, out chan<- result) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("X-N", strconv.Itoa(n))
	resp, err := c.Do(req)
	if err != nil {
		out <- result{err: err}
		return
	}
	_ = resp.Body.Close()
	out <- result{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
}

func queueFixture(t *testing.T, size int, timeout time.Duration) (*holdingBackend, *appFixture, string) {
	return queueFixtureOn(t, "fasthttp", size, timeout)
}

// queueFixtureOn serves one holding worker with max_inflight 1 through the
// given engine ("fasthttp" or "net/http").
func queueFixtureOn(t *testing.T, engine string, size int, timeout time.Duration) (*holdingBackend, *appFixture, string) {
	hb, addr := newHoldingBackend(t)
	p := newTestProxy(t, testSettings())
	app := testApp("web")
	app.MaxInflight = 1
	app.Queue.Size = size
	app.Queue.Timeout = timeout
	f := newFixture(p, app, addr)
	setApps(p, f)
	switch engine {
	case "net/http":
		srv := httptest.NewServer(p.Handler())
		t.Cleanup(srv.Close)
		return hb, f, srv.URL
	case "tls-h1":
		cert, key, _ := selfSigned(t)
		s := testSettings()
		s.TLS = &config.TLS{Cert: cert, Key: key}
		p.SetSettings(s)
		return hb, f, "https://" + serveOn(t, p, p.ServeTLS)
	}
	return hb, f, startProxy(t, p)
}

func TestQueueIsFIFO(t *testing.T) {
	hb, f, url := queueFixture(t, 10, 5*time.Second)
	c := client(t)
	out := make(chan result, 6)
	go send(context.Background(), c, url, 0, out)
	waitFor(t, "first request at the backend", 5*time.Second, func() bool { return len(hb.order()) == 1 })
	for i := 1; i <= 5; i++ {
		go send(context.Background(), c, url, i, out)
		waitFor(t, "request queued", 5*time.Second, func() bool { return f.stats.Queued.Load() == int64(i) })
	}
	hb.release()
	for range 6 {
		if r := <-out; r.err != nil || r.code != 200 {
			t.Fatalf("result %+v", r)
		}
	}
	want := []string{"0", "1", "2", "3", "4", "5"}
	if got := hb.order(); strconv.Quote(join(got)) != strconv.Quote(join(want)) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if q := f.stats.Queued.Load(); q != 0 {
		t.Fatalf("queued %d after all done", q)
	}
}

func join(s []string) string {
	out := ""
	for _, x := range s {
		out += x + ","
	}
	return out
}

func TestQueueOverflowIs503WithRetryAfter(t *testing.T) {
	hb, f, url := queueFixture(t, 2, 5*time.Second)
	c := client(t)
	out := make(chan result, 4)
	go send(context.Background(), c, url, 0, out)
	waitFor(t, "first request at the backend", 5*time.Second, func() bool { return len(hb.order()) == 1 })
	go send(context.Background(), c, url, 1, out)
	go send(context.Background(), c, url, 2, out)
	waitFor(t, "two queued", 5*time.Second, func() bool { return f.stats.Queued.Load() == 2 })
	go send(context.Background(), c, url, 3, out)
	r := <-out
	if r.code != 503 || r.retryAfter == "" {
		t.Fatalf("overflow answered %+v, want 503 with Retry-After", r)
	}
	if f.stats.QueueRejected.Load() != 1 {
		t.Fatalf("rejected counter %d", f.stats.QueueRejected.Load())
	}
	hb.release()
	for range 3 {
		if r := <-out; r.code != 200 {
			t.Fatalf("queued request got %+v", r)
		}
	}
}

func TestQueueDeadlineIs503(t *testing.T) {
	hb, f, url := queueFixture(t, 4, 100*time.Millisecond)
	c := client(t)
	out := make(chan result, 2)
	go send(context.Background(), c, url, 0, out)
	waitFor(t, "first request at the backend", 5*time.Second, func() bool { return len(hb.order()) == 1 })
	go send(context.Background(), c, url, 1, out)
	r := <-out
	if r.code != 503 || r.retryAfter == "" {
		t.Fatalf("queue deadline answered %+v", r)
	}
	if f.stats.QueueTimeouts.Load() != 1 || f.stats.Queued.Load() != 0 {
		t.Fatalf("timeouts %d queued %d", f.stats.QueueTimeouts.Load(), f.stats.Queued.Load())
	}
	hb.release()
	if r := <-out; r.code != 200 {
		t.Fatalf("held request %+v", r)
	}
}

func TestQueuedClientCancelLeavesQueue(t *testing.T) {
	for _, engine := range []string{"fasthttp", "net/http", "tls-h1"} {
		t.Run(engine, func(t *testing.T) { testQueuedClientCancel(t, engine) })
	}
}

func testQueuedClientCancel(t *testing.T, engine string) {
	hb, f, url := queueFixtureOn(t, engine, 4, 10*time.Second)
	c := client(t)
	if engine == "tls-h1" {
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the test's own certificate
			TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
		}
		t.Cleanup(tr.CloseIdleConnections)
		c = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	out := make(chan result, 2)
	go send(context.Background(), c, url, 0, out)
	waitFor(t, "first request at the backend", 5*time.Second, func() bool { return len(hb.order()) == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	go send(ctx, c, url, 1, out)
	waitFor(t, "queued", 5*time.Second, func() bool { return f.stats.Queued.Load() == 1 })
	cancel()
	waitFor(t, "cancelled request to leave the queue", 5*time.Second, func() bool {
		return f.stats.Queued.Load() == 0 && f.stats.ClientCancelled.Load() == 1
	})
	if r := <-out; r.err == nil {
		t.Fatalf("cancelled request got %+v", r)
	}
	hb.release()
	if r := <-out; r.code != 200 {
		t.Fatalf("held request %+v", r)
	}
	if got := hb.order(); len(got) != 1 {
		t.Fatalf("backend saw %v; the cancelled request must never reach it", got)
	}
}

func TestSingleThreadedWorkersNeverSeeTwoRequests(t *testing.T) {
	var violations, served atomic.Int64
	p := newTestProxy(t, testSettings())
	app := testApp("web")
	app.MaxInflight = 1
	app.Queue.Size, app.Queue.Timeout = 64, 10*time.Second
	var addrs []string
	for range 4 {
		var active atomic.Int64
		s := backend(t, func(w http.ResponseWriter, r *http.Request) {
			if active.Add(1) > 1 {
				violations.Add(1)
			}
			time.Sleep(2 * time.Millisecond) // simulated work, not a wait
			active.Add(-1)
			served.Add(1)
			_, _ = w.Write([]byte("ok"))
		})
		addrs = append(addrs, addrOf(s))
	}
	f := newFixture(p, app, addrs...)
	setApps(p, f)
	url := startProxy(t, p)
	c := client(t)
	out := make(chan result, 50)
	for i := range 50 {
		go send(context.Background(), c, url, i, out)
	}
	for range 50 {
		if r := <-out; r.err != nil || r.code != 200 {
			t.Fatalf("burst request: %+v", r)
		}
	}
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d times a worker saw two requests at once", v)
	}
	if served.Load() != 50 {
		t.Fatalf("served %d", served.Load())
	}
	for _, b := range f.backends() {
		if b.Inflight.Load() != 0 {
			t.Fatalf("%s inflight %d", b.ID, b.Inflight.Load())
		}
	}
}
