package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// failure runs one probe that must fail and returns its error and reason.
func failure(t *testing.T, p *Probe) (error, string) {
	t.Helper()
	err := p.Step(context.Background())
	if err == nil {
		t.Fatal("probe passed, want failure")
	}
	return err, p.Stats().LastError
}

func TestHangingServerTimesOut(t *testing.T) {
	srv := newRawServer(t, hang)
	spec := &config.Health{Type: TypeHTTP, Path: "/", Timeout: 200 * time.Millisecond}
	p := newTestProbe(t, spec, srv.addr(), nil)
	err, why := failure(t, p)
	var te *TimeoutError
	if !errors.As(err, &te) || te.After != 200*time.Millisecond {
		t.Fatalf("err = %v, want a *TimeoutError after 200ms", err)
	}
	if why != "timeout after 200ms" {
		t.Fatalf("reason = %q", why)
	}
}

func TestRefusedPort(t *testing.T) {
	addr := refusedAddr(t)
	for _, spec := range []*config.Health{nil, httpSpec(1, 1)} {
		p := newTestProbe(t, spec, addr, nil)
		err, why := failure(t, p)
		if !errors.Is(err, syscall.ECONNREFUSED) || why != "connection refused" {
			t.Fatalf("spec %+v: err = %v, reason %q", spec, err, why)
		}
	}
}

func TestConnectionReset(t *testing.T) {
	srv := newRawServer(t, func(c net.Conn) {
		// Read the request so the reset hits the probe's read, then abort
		// the connection with an RST instead of a FIN.
		http.ReadRequest(bufio.NewReader(c))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	p := newTestProbe(t, httpSpec(1, 1), srv.addr(), nil)
	if _, why := failure(t, p); why != "connection reset" {
		t.Fatalf("reason = %q, want connection reset", why)
	}
}

func TestClosedWithoutAnswer(t *testing.T) {
	srv := newRawServer(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		c.Close()
	})
	p := newTestProbe(t, httpSpec(1, 1), srv.addr(), nil)
	if _, why := failure(t, p); why != "connection closed" {
		t.Fatalf("reason = %q, want connection closed", why)
	}
}

func TestExpectStatus(t *testing.T) {
	srv := newFlipServer(t, 200)
	cases := []struct {
		expect []int
		status int
		pass   bool
	}{
		{nil, 200, true},
		{nil, 204, true},
		{nil, 399, true},
		{nil, 400, false},
		{nil, 404, false},
		{nil, 500, false},
		{[]int{204}, 200, false},
		{[]int{204}, 204, true},
		{[]int{200, 503}, 503, true},
		{[]int{418}, 301, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v/%d", tc.expect, tc.status), func(t *testing.T) {
			srv.status.Store(int64(tc.status))
			spec := httpSpec(1, 1)
			spec.ExpectStatus = tc.expect
			p := newTestProbe(t, spec, srv.addr(), nil)
			err := p.Step(context.Background())
			if pass := err == nil; pass != tc.pass {
				t.Fatalf("err = %v, want pass = %v", err, tc.pass)
			}
			var se *StatusError
			if !tc.pass && (!errors.As(err, &se) || se.Code != tc.status) {
				t.Fatalf("err = %v, want *StatusError %d", err, tc.status)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var followed int
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		followed++
		w.WriteHeader(http.StatusInternalServerError)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	rec := newRecorder()
	p := newTestProbe(t, httpSpec(1, 1), strings.TrimPrefix(srv.URL, "http://"), rec)
	step(t, p, true)
	if tr := rec.next(t); tr.Reason != "passed, status 302" {
		t.Fatalf("transition %+v, want a pass on the 302 itself", tr)
	}
	srv.Close() // the handler's counter is safe to read once the server stopped
	if followed != 0 {
		t.Fatalf("redirect followed %d times", followed)
	}
}

func TestHostHeaderAndUserAgent(t *testing.T) {
	srv := newFlipServer(t, 200)
	spec := httpSpec(1, 1)
	spec.Path = "/health?deep=1"
	p := newTestProbe(t, spec, srv.addr(), nil)
	step(t, p, true)
	host, path, agent := srv.seen()
	if host != srv.addr() || path != "/health?deep=1" || agent != "corral-health" {
		t.Fatalf("no Host set: saw host %q path %q agent %q", host, path, agent)
	}

	spec.Host = "app.example.com"
	p.SetSpec(spec)
	step(t, p, true)
	if host, _, _ := srv.seen(); host != "app.example.com" {
		t.Fatalf("Host header = %q, want app.example.com", host)
	}
}

func TestLargeBodyNotReadFully(t *testing.T) {
	const total = 10 << 20
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(total))
		chunk := make([]byte, 32<<10)
		// Send a little more than the probe may read, then hold the rest
		// back until the probe has returned: a probe that reads the whole
		// body would hang here until its timeout and fail.
		sent := 0
		for sent <= maxBodyBytes {
			n, err := w.Write(chunk)
			if err != nil {
				return
			}
			sent += n
		}
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		for sent < total {
			n, err := w.Write(chunk[:min(len(chunk), total-sent)])
			if err != nil {
				return
			}
			sent += n
		}
	}))
	defer srv.Close()
	defer close(release)

	spec := httpSpec(1, 1)
	spec.Timeout = 5 * time.Second
	p := newTestProbe(t, spec, strings.TrimPrefix(srv.URL, "http://"), nil)
	start := time.Now()
	step(t, p, true)
	if d := time.Since(start); d >= spec.Timeout {
		t.Fatalf("probe took %s", d)
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	accepted := make(chan struct{}, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
			accepted <- struct{}{}
		}
	}()
	rec := newRecorder()
	p := newTestProbe(t, nil, addr, rec)
	step(t, p, true)
	if tr := rec.next(t); !tr.Healthy || tr.Reason != "passed" {
		t.Fatalf("transition %+v", tr)
	}
	select {
	case <-accepted:
	case <-time.After(waitTimeout):
		t.Fatal("TCP probe did not connect")
	}

	ln.Close()
	for range 2 {
		step(t, p, false)
	}
	rec.none(t)
	step(t, p, false) // default unhealthy threshold is 3
	if tr := rec.next(t); tr.Healthy || tr.Reason != "connection refused" {
		t.Fatalf("transition %+v", tr)
	}
}

func TestReason(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{&StatusError{Code: 503}, "status 503"},
		{fmt.Errorf("wrapped: %w", &StatusError{Code: 404}), "status 404"},
		{classify(context.DeadlineExceeded, time.Second), "timeout after 1s"},
		{classify(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, time.Second), "connection refused"},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, "connection reset"},
		{io.ErrUnexpectedEOF, "connection closed"},
		{errors.New("  weird " + strings.Repeat("x", 200)), "weird " + strings.Repeat("x", maxReasonLen-6) + "..."},
	}
	for _, tc := range cases {
		if got := reason(tc.err); got != tc.want {
			t.Errorf("reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestKeepAliveReusesOneConnection(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	p := newTestProbe(t, httpSpec(1, 1), strings.TrimPrefix(srv.URL, "http://"), nil)
	for range 20 {
		step(t, p, true)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 probes opened %d connections, want 1", n)
	}
}
