package admin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/corral-dev/corral/health"
	"github.com/corral-dev/corral/pool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeRuntime serves a fixed status and reload result that tests may change.
type fakeRuntime struct {
	mu       sync.Mutex
	status   Status
	reload   ReloadResult
	triggers []string
	// hook, when set, runs inside Reload before it answers.
	hook func(ctx context.Context)
}

func (f *fakeRuntime) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeRuntime) Reload(ctx context.Context, trigger string) ReloadResult {
	if f.hook != nil {
		f.hook(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.triggers = append(f.triggers, trigger)
	r := f.reload
	r.Trigger = trigger
	return r
}

func (f *fakeRuntime) set(fn func(s *Status)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.status)
}

// restartFunc adapts a function to Restarter.
type restartFunc func(ctx context.Context, app string) error

func (f restartFunc) Restart(ctx context.Context, app string) error { return f(ctx, app) }

// metricsFunc adapts a function to Metrics.
type metricsFunc func() []AppMetrics

func (f metricsFunc) MetricsSnapshot() []AppMetrics { return f() }

var testStart = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// sampleStatus has two apps: web with two ready workers and one in
// backoff, api with one ready worker on a Unix socket.
func sampleStatus() Status {
	return Status{
		Version:   "1.2.3",
		PID:       4242,
		StartedAt: testStart,
		Config:    "/srv/config.hcl",
		Listen:    "127.0.0.1:8080",
		LastReload: &ReloadResult{
			At: testStart.Add(time.Minute), Trigger: TriggerFile, Applied: true, Changes: "web: 2 -> 3 instances",
		},
		Apps: []pool.AppStatus{
			{
				Name: "web", Instances: 3, Ready: 2, Queued: 1,
				Roll: pool.RollStatus{State: "done", Reason: "api"},
				Workers: []pool.WorkerStatus{
					{ID: "web-1", PID: 101, Port: 20001, State: pool.StateReady, Restarts: 0, StartedAt: testStart, Inflight: 3, Requests: 10,
						Health: &health.Stats{Healthy: true, LastCheck: testStart, LastLatencyMillis: 2.5}},
					{ID: "web-2", PID: 102, Port: 20002, State: pool.StateReady, Restarts: 1, StartedAt: testStart, Ejected: true, EjectReason: "5 failures"},
					{ID: "web-3", State: pool.StateBackoff, Restarts: 4, LastExit: "exit status 1"},
				},
			},
			{
				Name: "api", Instances: 1, Ready: 1,
				Workers: []pool.WorkerStatus{
					{ID: "api-1", PID: 201, Socket: "/run/user/1000/corral-4242-1/api-1.1.sock", State: pool.StateReady, StartedAt: testStart},
				},
			},
		},
	}
}

// startServer serves a new admin Server on a fresh 127.0.0.1 port and
// stops it when the test ends.
func startServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = hclog.New(&hclog.LoggerOptions{Output: io.Discard})
	}
	srv := New(opts)
	return srv, serveLoopback(t, srv)
}

// serveLoopback serves srv on a fresh 127.0.0.1 port and shuts it down when
// the test ends (a second Shutdown is harmless), checking that Serve then
// returns nil.
func serveLoopback(t *testing.T, srv *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve returned %v after Shutdown, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return ln.Addr().String()
}

// do sends one request to the server at addr without keep-alive, so no
// connection outlives the test, and returns the status code, the
// Content-Type and the body.
func do(t *testing.T, method, addr, path string, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := send(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(body)
}

// send does req on a client without keep-alive; safe in any goroutine.
func send(req *http.Request) (*http.Response, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	return client.Do(req)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mustContain fails the test for each want missing from s.
func mustContain(t *testing.T, s string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(s, w) {
			t.Errorf("missing %q in:\n%s", w, s)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var errRollFailed = errors.New("new worker web-4 failed its health check")
