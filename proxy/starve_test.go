package proxy

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"
)

// shortListener fails its accepts with the errors in fails, in order, and
// then hands out one end of a pipe.
type shortListener struct {
	net.Listener
	mu    sync.Mutex
	fails []error
}

func (l *shortListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.fails) > 0 {
		err := l.fails[0]
		l.fails = l.fails[1:]
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: err}
	}
	a, b := net.Pipe()
	b.Close()
	return a, nil
}

func (l *shortListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// TestAcceptWaitsOutADescriptorShortage: EMFILE and ENFILE are waited out
// (the accept returns the next connection), two episodes in a row log one
// warning and one recovery line between them, both are counted, and any
// other error ends the accept.
func TestAcceptWaitsOutADescriptorShortage(t *testing.T) {
	var out bytes.Buffer
	s := newStarvation(hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info}))
	ln := &shortListener{fails: []error{syscall.EMFILE, syscall.EMFILE, syscall.ENFILE}}
	for episode := range 2 {
		c, err := s.accept(ln, nil, nil)
		if err != nil {
			t.Fatalf("episode %d: %v", episode, err)
		}
		c.Close()
		ln.fails = []error{syscall.EMFILE}
	}
	if n := s.waits.Load(); n != 2 {
		t.Errorf("%d accepts counted as waiting, want 2", n)
	}
	log := out.String()
	if strings.Count(log, "out of file descriptors") != 1 || strings.Count(log, "accepting connections again") != 1 {
		t.Errorf("want one warning and one recovery line for two episodes within a minute, got:\n%s", log)
	}
	ln.fails = []error{syscall.ECONNABORTED}
	if _, err := s.accept(ln, nil, nil); err == nil || outOfResources(err) {
		t.Errorf("accept with another error = %v, want that error", err)
	}
	stop := make(chan struct{})
	close(stop)
	ln.fails = []error{syscall.EMFILE}
	if _, err := s.accept(ln, stop, nil); err != net.ErrClosed {
		t.Errorf("accept out of descriptors with stop closed = %v, want net.ErrClosed", err)
	}
}

// TestFastHTTPServeEndsOnEMFILE pins why starvation.accept exists: fasthttp's
// Serve treats an accept error that is not a timeout as permanent and
// returns it (logging "Permanent error when accepting new connections"),
// so an EMFILE that reached it would end the public listener for good.
// Should an upgrade make it retry by itself, this fails, and the wrapper
// may go.
func TestFastHTTPServeEndsOnEMFILE(t *testing.T) {
	var out bytes.Buffer
	s := &fasthttp.Server{Handler: func(*fasthttp.RequestCtx) {}, Logger: fastLogger{hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Debug})}}
	ln := &shortListener{fails: []error{syscall.EMFILE}}
	if err := s.Serve(ln); !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("fasthttp Serve on EMFILE = %v, want it to end with that error", err)
	}
	if !strings.Contains(out.String(), "Permanent error when accepting new connections") {
		t.Fatalf("fasthttp logged %q", out.String())
	}
}
