package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

func TestMain(m *testing.M) {
	// fasthttp's own cleaners sleep in loops and notice their end late (the
	// server date updater never ends); they are the library's, not ours.
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	)
}

// testSettings are proxy settings with short, test-friendly timeouts.
func testSettings() config.Proxy {
	return config.Proxy{
		ReadHeaderTimeout:     2 * time.Second,
		IdleTimeout:           5 * time.Second,
		MaxHeaderBytes:        8 << 10,
		MaxBodyBytes:          1 << 20,
		DialTimeout:           time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
		WorkerIdleTimeout:     5 * time.Second,
		RequestID:             true,
		// The defaults of the config file.
		Buffering: config.Buffering{
			RequestMemory: 1 << 20, RequestDisk: 16 << 20,
			ResponseMemory: 1 << 20, ResponseDisk: 1 << 30,
			MemoryLimit: 128 << 20, DiskLimit: 4 << 30, Chunked: true,
		},
	}
}

// testApp is an app spec with defaults the tests may override.
func testApp(name string) *config.App {
	return &config.App{
		Name:         name,
		Balance:      config.BalanceLeastOutstanding,
		Retries:      2,
		RetryTimeout: 5 * time.Second,
		Queue:        config.Queue{Size: 16, Timeout: 2 * time.Second},
	}
}

// tableSource is a hand-built routing table source.
type tableSource struct{ t atomic.Pointer[pool.Table] }

func (s *tableSource) Table() *pool.Table { return s.t.Load() }

// appFixture bundles an app spec, its table and its stats.
type appFixture struct {
	app   *config.App
	src   *tableSource
	stats *pool.AppStats
}

// newFixture builds a table for app with one backend per address.
func newFixture(p *Proxy, app *config.App, addrs ...string) *appFixture {
	f := &appFixture{app: app, src: &tableSource{}, stats: &pool.AppStats{}}
	f.set(p, addrs...)
	return f
}

// set publishes a new table with fresh backends for addrs.
func (f *appFixture) set(p *Proxy, addrs ...string) {
	var bs []*pool.Backend
	for i, a := range addrs {
		bs = append(bs, newBackend(p, f.app, f.app.Name+"-"+itoa(i+1), a))
	}
	f.publish(bs...)
}

func (f *appFixture) publish(bs ...*pool.Backend) {
	old := f.src.t.Load()
	v := uint64(1)
	if old != nil {
		v = old.Version + 1
	}
	f.src.t.Store(&pool.Table{App: f.app, Backends: bs, Stats: f.stats, Version: v})
}

func (f *appFixture) backends() []*pool.Backend { return f.src.t.Load().Backends }

func newBackend(p *Proxy, app *config.App, id, addr string) *pool.Backend {
	b := &pool.Backend{ID: id, Addr: addr, Stats: &pool.WorkerStats{}}
	if strings.HasPrefix(addr, "/") {
		b.Socket = addr // as the pool makes a socket worker's
	}
	if p != nil {
		b.Upstream = p.NewUpstream(addr, app)
	}
	return b
}

func itoa(i int) string { return strconv.Itoa(i) }

// shortTempDir is a temporary directory short enough to hold a Unix
// socket (t.TempDir's path carries the test's name).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// setApps registers fixtures with p.
func setApps(p *Proxy, fs ...*appFixture) {
	var apps []*config.App
	tables := map[string]TableSource{}
	for _, f := range fs {
		apps = append(apps, f.app)
		tables[f.app.Name] = f.src
	}
	p.SetApps(apps, tables)
}

// startProxy serves p on a fresh loopback port and shuts it down when the
// test ends. It returns the base URL.
func startProxy(t *testing.T, p *Proxy) string {
	t.Helper()
	return "http://" + serveOn(t, p, p.Serve)
}

// serveOn runs serve (p.Serve or p.ServeTLS) on a fresh loopback listener
// and shuts p down when the test ends. It returns the listener address.
func serveOn(tb testing.TB, p *Proxy, serve func(net.Listener) error) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func newTestProxy(t *testing.T, s config.Proxy) *Proxy {
	return New(s, hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: testWriter{t}}))
}

// testWriter sends log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// backend starts an httptest server on 127.0.0.1 closed at test end.
func backend(t *testing.T, h http.HandlerFunc) *httptest.Server {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func addrOf(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	_ = ln.Close()
	return a
}

// client is an HTTP client whose idle connections close at test end.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// get fetches url and returns status, body and headers.
func get(t *testing.T, c *http.Client, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
