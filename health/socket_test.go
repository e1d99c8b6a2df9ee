package health

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/corral-dev/corral/config"
)

// TestProbeOverUnixSocket checks that a worker address that is a socket
// path is probed over that socket: the HTTP check reaches the worker
// (Host localhost, as a socket has no host) and fails with its status, and
// the TCP-type check connects, then fails once nothing listens there.
func TestProbeOverUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "web-1.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var status atomic.Int64
	status.Store(200)
	seen := make(chan string, 10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Host + " " + r.URL.RequestURI()
		w.WriteHeader(int(status.Load()))
		io.WriteString(w, "ok\n")
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	defer func() { <-done }()
	defer srv.Close()

	rec := newRecorder()
	p := newTestProbe(t, httpSpec(1, 1), path, rec)
	step(t, p, true)
	if tr := rec.next(t); !tr.Healthy {
		t.Fatalf("transition %+v, want healthy", tr)
	}
	if got := <-seen; got != "localhost /health" {
		t.Fatalf("worker saw %q, want %q", got, "localhost /health")
	}
	status.Store(503)
	step(t, p, false)
	if tr := rec.next(t); tr.Healthy || tr.Reason != "status 503" {
		t.Fatalf("transition %+v, want unhealthy with status 503", tr)
	}

	tcpRec := newRecorder()
	tcp := newTestProbe(t, &config.Health{Type: TypeTCP, UnhealthyThreshold: 1, HealthyThreshold: 1}, path, tcpRec)
	step(t, tcp, true)
	if tr := tcpRec.next(t); !tr.Healthy {
		t.Fatalf("tcp probe transition %+v, want healthy", tr)
	}
	srv.Close() // closes the listener, which removes the socket file
	step(t, tcp, false)
	if tr := tcpRec.next(t); tr.Healthy || tr.Reason != "no socket file" {
		t.Fatalf("tcp probe transition %+v, want unhealthy with no socket file", tr)
	}
}
