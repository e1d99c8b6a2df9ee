package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestStatusJSONShape(t *testing.T) {
	rt := &fakeRuntime{status: sampleStatus()}
	rt.set(func(s *Status) { s.Version = "" })
	_, addr := startServer(t, Options{Runtime: rt, Version: "9.9.9"})

	code, ctype, body := do(t, "GET", addr, "/status")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "application/json") {
		t.Fatalf("GET /status = %d %q", code, ctype)
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	if doc["version"] != "9.9.9" {
		t.Errorf("version = %v, want the server's version when the runtime has none", doc["version"])
	}
	for _, k := range []string{"pid", "started_at", "config", "listen", "shutting_down", "last_reload", "apps"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("status has no %q", k)
		}
	}
	apps := doc["apps"].([]any)
	if len(apps) != 2 {
		t.Fatalf("apps = %d, want 2", len(apps))
	}
	web := apps[0].(map[string]any)
	if web["name"] != "web" {
		t.Errorf("apps[0].name = %v", web["name"])
	}
	workers := web["workers"].([]any)
	if len(workers) != 3 {
		t.Fatalf("web workers = %d, want 3", len(workers))
	}
	w := workers[0].(map[string]any)
	for _, k := range []string{"id", "pid", "port", "state", "restarts", "started_at", "inflight", "requests", "health"} {
		if _, ok := w[k]; !ok {
			t.Errorf("worker has no %q: %v", k, w)
		}
	}
	if w["id"] != "web-1" || w["pid"] != 101.0 || w["port"] != 20001.0 || w["state"] != "ready" {
		t.Errorf("worker = %v", w)
	}
}

func TestStatusListsAreNeverNull(t *testing.T) {
	rt := &fakeRuntime{}
	_, addr := startServer(t, Options{Runtime: rt})
	_, _, body := do(t, "GET", addr, "/status")
	mustContain(t, body, `"apps": []`)

	rt.set(func(s *Status) { s.Apps = append(s.Apps, sampleStatus().Apps[0]) })
	rt.set(func(s *Status) { s.Apps[0].Workers = nil })
	_, _, body = do(t, "GET", addr, "/status")
	mustContain(t, body, `"workers": []`)
}

func TestHealthz(t *testing.T) {
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{}})
	if code, _, body := do(t, "GET", addr, "/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d %s", code, body)
	}
}

// livenessFunc adapts a function to Liveness.
type livenessFunc func(ctx context.Context) error

func (f livenessFunc) Alive(ctx context.Context) error { return f(ctx) }

func TestHealthzFailsWhenTheSupervisorIsStuck(t *testing.T) {
	var mu sync.Mutex
	var heartbeat func(ctx context.Context) error
	set := func(f func(ctx context.Context) error) {
		mu.Lock()
		defer mu.Unlock()
		heartbeat = f
	}
	live := livenessFunc(func(ctx context.Context) error {
		mu.Lock()
		f := heartbeat
		mu.Unlock()
		return f(ctx)
	})
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{}, Liveness: live})

	set(func(ctx context.Context) error { return nil })
	if code, _, body := do(t, "GET", addr, "/healthz"); code != http.StatusOK {
		t.Fatalf("alive: GET /healthz = %d %s", code, body)
	}

	set(func(ctx context.Context) error { return errors.New("supervisor of app web does not answer") })
	code, _, body := do(t, "GET", addr, "/healthz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("a stuck supervisor: GET /healthz = %d, want 503", code)
	}
	mustContain(t, body, "app web")

	// A heartbeat that never answers is bounded: a liveness probe's
	// timeout is 1 s by default in Kubernetes.
	set(func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	start := time.Now()
	if code, _, _ := do(t, "GET", addr, "/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("a heartbeat that hangs: GET /healthz = %d, want 503", code)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("GET /healthz took %s with a hanging heartbeat, want under 1s", took)
	}
}

func TestReadyz(t *testing.T) {
	rt := &fakeRuntime{status: sampleStatus()}
	_, addr := startServer(t, Options{Runtime: rt})

	if code, _, body := do(t, "GET", addr, "/readyz"); code != http.StatusOK {
		t.Fatalf("all apps ready: GET /readyz = %d %s", code, body)
	}

	rt.set(func(s *Status) { s.Apps[1].Ready = 0 })
	code, _, body := do(t, "GET", addr, "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("api has no ready worker: GET /readyz = %d, want 503", code)
	}
	mustContain(t, body, "api")
	if strings.Contains(body, "web") {
		t.Errorf("body names web, which is ready: %q", body)
	}

	rt.set(func(s *Status) { s.Apps[1].Ready = 1; s.ShuttingDown = true })
	code, _, body = do(t, "GET", addr, "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("shutting down: GET /readyz = %d, want 503", code)
	}
	mustContain(t, body, "shutting down")
}

func TestReload(t *testing.T) {
	tests := []struct {
		name   string
		result ReloadResult
		code   int
	}{
		{"applied", ReloadResult{Applied: true, Changes: "web: 2 -> 4 instances"}, http.StatusOK},
		{"no change", ReloadResult{Applied: true}, http.StatusOK},
		{"invalid", ReloadResult{Problems: []string{"config.hcl:12:3: app.web.instances: must be at least 1"}}, http.StatusUnprocessableEntity},
		{"failed", ReloadResult{Error: "binding 127.0.0.1:80: permission denied"}, http.StatusInternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := &fakeRuntime{reload: tt.result}
			_, addr := startServer(t, Options{Runtime: rt})
			code, ctype, body := do(t, "POST", addr, "/reload")
			if code != tt.code || !strings.HasPrefix(ctype, "application/json") {
				t.Fatalf("POST /reload = %d %q, want %d json", code, ctype, tt.code)
			}
			var got ReloadResult
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if got.Trigger != TriggerAPI || got.Applied != tt.result.Applied || got.Changes != tt.result.Changes ||
				strings.Join(got.Problems, "|") != strings.Join(tt.result.Problems, "|") || got.Error != tt.result.Error {
				t.Errorf("result = %+v, want %+v with trigger api", got, tt.result)
			}
		})
	}
}

func TestReloadOutlivesClientHangup(t *testing.T) {
	started := make(chan struct{})
	ctxErr := make(chan error, 1)
	rt := &fakeRuntime{reload: ReloadResult{Applied: true}, hook: func(ctx context.Context) {
		close(started)
		// A request's context ends within milliseconds of the hang-up; a
		// reload's context must still be live well after that. Absence of
		// an event can only be shown by waiting a while.
		select {
		case <-ctx.Done():
			ctxErr <- ctx.Err()
		case <-time.After(time.Second):
			ctxErr <- nil
		}
	}}
	_, addr := startServer(t, Options{Runtime: rt})

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/reload", nil)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if resp, err := send(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	cancel() // the client hangs up mid-reload
	<-sent
	select {
	case err := <-ctxErr:
		if err != nil {
			t.Errorf("reload context ended with %v when the client hung up; the reload must go on", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reload never finished")
	}
}

func TestTraceLogsRequests(t *testing.T) {
	var buf syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Trace})
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{}, Logger: log})
	do(t, "GET", addr, "/healthz")
	waitFor(t, "trace line", func() bool { return strings.Contains(buf.String(), "path=/healthz") })
	mustContain(t, buf.String(), "admin: request", "method=GET", "status=200")
}

func TestRestart(t *testing.T) {
	tests := []struct {
		name    string
		path    string
		err     error
		code    int
		result  string
		calls   int32
		errText string
	}{
		{"done", "/apps/web/restart", nil, http.StatusOK, "done", 1, ""},
		{"failed", "/apps/web/restart", fmt.Errorf("rolling web: %w", errRollFailed), http.StatusConflict, "failed", 1, "web-4 failed its health check"},
		{"unknown app", "/apps/nope/restart", nil, http.StatusNotFound, "failed", 0, "unknown app"},
		{"unknown to restarter", "/apps/web/restart", fmt.Errorf("rolling web: %w", ErrUnknownApp), http.StatusNotFound, "failed", 1, "unknown app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			rs := restartFunc(func(ctx context.Context, app string) error {
				calls.Add(1)
				if app != "web" {
					t.Errorf("Restart(%q), want web", app)
				}
				return tt.err
			})
			_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: sampleStatus()}, Restarter: rs})
			code, ctype, body := do(t, "POST", addr, tt.path)
			if code != tt.code || !strings.HasPrefix(ctype, "application/json") {
				t.Fatalf("POST %s = %d %q %s, want %d json", tt.path, code, ctype, body, tt.code)
			}
			var got RestartResult
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			if got.Result != tt.result || !strings.Contains(got.Error, tt.errText) {
				t.Errorf("body = %+v, want result %q error containing %q", got, tt.result, tt.errText)
			}
			if got.App == "" {
				t.Error("body has no app")
			}
			if n := calls.Load(); n != tt.calls {
				t.Errorf("Restart called %d times, want %d", n, tt.calls)
			}
		})
	}
}

func TestRestartNoWaitAnswersAtOnce(t *testing.T) {
	release := make(chan struct{})
	finished := make(chan error, 1)
	rs := restartFunc(func(ctx context.Context, app string) error {
		<-release
		finished <- nil
		return nil
	})
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: sampleStatus()}, Restarter: rs})

	// The roll blocks until released, so a 202 proves the handler did not wait.
	code, _, body := do(t, "POST", addr, "/apps/web/restart?wait=false")
	if code != http.StatusAccepted {
		t.Fatalf("POST ?wait=false = %d %s, want 202", code, body)
	}
	mustContain(t, body, `"result": "started"`, `"app": "web"`)
	close(release)
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("background roll did not finish after release")
	}

	if code, _, _ := do(t, "POST", addr, "/apps/nope/restart?wait=false"); code != http.StatusNotFound {
		t.Errorf("unknown app with wait=false = %d, want 404", code)
	}
}

func TestShutdownCancelsBackgroundRestart(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	rs := restartFunc(func(ctx context.Context, app string) error {
		close(started)
		<-ctx.Done()
		ended <- ctx.Err()
		return ctx.Err()
	})
	srv := New(Options{Runtime: &fakeRuntime{status: sampleStatus()}, Restarter: rs})
	ts := serveLoopback(t, srv)

	code, _, body := do(t, "POST", ts, "/apps/web/restart?wait=false")
	if code != http.StatusAccepted {
		t.Fatalf("POST ?wait=false = %d %s", code, body)
	}
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Shutdown waits for the roll, so its outcome is already there.
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("roll context ended with %v, want canceled", err)
		}
	default:
		t.Fatal("Shutdown returned before the background roll ended")
	}
}

func TestShutdownReleasesWaitingRestart(t *testing.T) {
	started := make(chan struct{})
	rs := restartFunc(func(ctx context.Context, app string) error {
		close(started)
		<-ctx.Done()
		return fmt.Errorf("rolling %s: %w", app, ctx.Err())
	})
	srv := New(Options{Runtime: &fakeRuntime{status: sampleStatus()}, Restarter: rs})
	addr := serveLoopback(t, srv)

	answered := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+addr+"/apps/web/restart", nil)
		resp, err := send(req)
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a waiting restart request: %v", err)
	}
	select {
	case code := <-answered:
		if code != http.StatusConflict {
			t.Errorf("waiting restart answered %d, want 409", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting restart request never answered")
	}
}

func TestRestartRefusedAfterShutdown(t *testing.T) {
	var calls atomic.Int32
	rs := restartFunc(func(ctx context.Context, app string) error { calls.Add(1); return nil })
	srv := New(Options{Runtime: &fakeRuntime{status: sampleStatus()}, Restarter: rs})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// The handler still works in-process (e.g. a request that raced Shutdown).
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "http://127.0.0.1/apps/web/restart?wait=false", nil))
	if rec.Code != http.StatusServiceUnavailable || calls.Load() != 0 {
		t.Errorf("restart after Shutdown = %d with %d rolls, want 503 and none", rec.Code, calls.Load())
	}
}

func TestServeMovesToANewListener(t *testing.T) {
	srv, oldAddr := startServer(t, Options{Runtime: &fakeRuntime{}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if code, _, _ := do(t, "GET", ln.Addr().String(), "/healthz"); code != http.StatusOK {
		t.Fatalf("second listener /healthz = %d", code)
	}
	if code, _, _ := do(t, "GET", oldAddr, "/healthz"); code != http.StatusOK {
		t.Fatalf("first listener /healthz = %d", code)
	}
	// A reload that moves admin.listen closes the old listener itself.
	ln.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after its listener was closed = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener closed")
	}
}

func TestRestartWithoutRestarter(t *testing.T) {
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: sampleStatus()}})
	if code, _, _ := do(t, "POST", addr, "/apps/web/restart"); code != http.StatusNotImplemented {
		t.Errorf("restart without a Restarter = %d, want 501", code)
	}
}

func TestUnknownRouteAndWrongMethod(t *testing.T) {
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: sampleStatus()}})
	tests := []struct {
		method, path string
		code         int
	}{
		{"GET", "/nope", http.StatusNotFound},
		{"GET", "/apps/web", http.StatusNotFound},
		{"GET", "/reload", http.StatusMethodNotAllowed},
		{"POST", "/status", http.StatusMethodNotAllowed},
		{"GET", "/apps/web/restart", http.StatusMethodNotAllowed},
		{"DELETE", "/", http.StatusMethodNotAllowed},
		{"POST", "/metrics", http.StatusMethodNotAllowed},
		{"HEAD", "/healthz", http.StatusOK},
		{"HEAD", "/", http.StatusOK},
	}
	for _, tt := range tests {
		if code, _, _ := do(t, tt.method, addr, tt.path); code != tt.code {
			t.Errorf("%s %s = %d, want %d", tt.method, tt.path, code, tt.code)
		}
	}
}

func TestCrossOriginPostRefused(t *testing.T) {
	rt := &fakeRuntime{reload: ReloadResult{Applied: true}}
	_, addr := startServer(t, Options{Runtime: rt})

	if code, _, _ := do(t, "POST", addr, "/reload", "Origin", "http://evil.example"); code != http.StatusForbidden {
		t.Errorf("cross-origin POST /reload = %d, want 403", code)
	}
	if code, _, _ := do(t, "POST", addr, "/reload", "Origin", "http://"+addr); code != http.StatusOK {
		t.Errorf("same-origin POST /reload = %d, want 200", code)
	}
	if n := len(rt.triggers); n != 1 {
		t.Errorf("runtime reloaded %d times, want 1 (only the same-origin request)", n)
	}
}
