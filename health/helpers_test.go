package health

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"github.com/corral-dev/corral/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait in these tests; generous because the
// machine is shared, and far below any interval a test relies on not
// elapsing.
const waitTimeout = 10 * time.Second

// recorder is an Observer that queues every transition it receives.
type recorder struct {
	ch chan Transition
}

func newRecorder() *recorder { return &recorder{ch: make(chan Transition, 1000)} }

func (r *recorder) HealthChanged(t Transition) { r.ch <- t }

// next waits for the next transition or fails the test.
func (r *recorder) next(t *testing.T) Transition {
	t.Helper()
	select {
	case tr := <-r.ch:
		return tr
	case <-time.After(waitTimeout):
		t.Fatalf("no transition within %s", waitTimeout)
		return Transition{}
	}
}

// none fails the test if a transition is queued.
func (r *recorder) none(t *testing.T) {
	t.Helper()
	select {
	case tr := <-r.ch:
		t.Fatalf("unexpected transition %+v", tr)
	default:
	}
}

// flipServer is an HTTP worker whose answer status the test flips.
type flipServer struct {
	*httptest.Server
	status atomic.Int64
	hits   atomic.Int64

	mu        sync.Mutex
	lastHost  string
	lastPath  string
	lastAgent string
}

func newFlipServer(t *testing.T, status int) *flipServer {
	t.Helper()
	s := &flipServer{}
	s.status.Store(int64(status))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.lastHost, s.lastPath, s.lastAgent = r.Host, r.URL.RequestURI(), r.UserAgent()
		s.mu.Unlock()
		w.WriteHeader(int(s.status.Load()))
		io.WriteString(w, "ok\n")
	}))
	t.Cleanup(s.Close)
	return s
}

// addr is the server's host:port.
func (s *flipServer) addr() string { return strings.TrimPrefix(s.URL, "http://") }

// seen returns the Host header, request URI and User-Agent of the last request.
func (s *flipServer) seen() (host, path, agent string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHost, s.lastPath, s.lastAgent
}

// newTestProbe returns a probe whose idle connections are closed when the
// test ends, as Run would do on exit.
func newTestProbe(t *testing.T, spec *config.Health, addr string, obs Observer) *Probe {
	t.Helper()
	log := hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: testWriter{t}})
	p := NewProbe(spec, "web-1", addr, obs, log)
	t.Cleanup(p.transport.CloseIdleConnections)
	return p
}

// testWriter sends log lines to t.Log so they show only for failing tests.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// httpSpec is an HTTP health spec with short settings for tests.
func httpSpec(healthy, unhealthy int) *config.Health {
	return &config.Health{
		Type:               TypeHTTP,
		Path:               "/health",
		Interval:           time.Minute, // Step-driven tests never wait for it
		Timeout:            2 * time.Second,
		HealthyThreshold:   healthy,
		UnhealthyThreshold: unhealthy,
	}
}

// rawServer is a TCP listener whose connections are handled by fn; it
// closes the listener and every connection when the test ends.
type rawServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func newRawServer(t *testing.T, fn func(net.Conn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				fn(c)
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

func (s *rawServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// hang holds a connection open without answering until it is closed.
func hang(c net.Conn) { io.Copy(io.Discard, c) }

// refusedAddr returns a loopback address nobody listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// runProbe starts p.Run and returns a stop function that cancels it and
// waits for it to return.
func runProbe(t *testing.T, p *Probe) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			t.Fatalf("Run did not return within %s of cancel", waitTimeout)
		}
	}
	t.Cleanup(stop)
	return stop
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitTimeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not within %s", what, waitTimeout)
		}
	}
}
