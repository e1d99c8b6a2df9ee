package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/config"
)

// probe sends raw on a fresh connection of e and returns the worker's view.
func probe(t *testing.T, e engine, raw string, answer func(r *recorded, c net.Conn, w *bufio.Writer) bool) (*recorded, string) {
	t.Helper()
	rec := newRecorder(t, answer)
	f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
	out := f.rawExchange(t, raw)
	got := rec.requests()
	if len(got) == 0 {
		return nil, out
	}
	return got[len(got)-1], out
}

// TestReview2RewriteEdges pins how the head rewrite treats what a hostile
// client sends on HTTP/1.1, plain and over TLS: raw targets, absolute-form
// targets with either scheme, an empty or repeated X-Request-Id, names in
// and odd case and obs-folds carrying forwarding names.
func TestReview2RewriteEdges(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		t.Run("plain path kept raw", func(t *testing.T) {
			r, out := probe(t, e, "GET /ws/a%2Fb/../c//d?x=%41 HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n", nil)
			if r == nil || r.line != "GET /ws/a%2Fb/../c//d?x=%41 HTTP/1.1" {
				t.Errorf("worker line %v, answer %q", r, firstLine(out))
			}
		})
		t.Run("absolute https target", func(t *testing.T) {
			r, out := probe(t, e, "GET https://h.test/x?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n", nil)
			if r == nil || r.line != "GET /x?q=1 HTTP/1.1" || fmt.Sprint(r.header("Host")) != "[h.test]" || fmt.Sprint(r.header("X-Forwarded-Host")) != "[h.test]" {
				t.Errorf("worker %v, answer %q", r, firstLine(out))
			}
		})
		t.Run("absolute https upgrade", func(t *testing.T) {
			r, out := probe(t, e, "GET https://h.test/ws?q=1 HTTP/1.1\r\nHost: other.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", echoUpgrade)
			if r == nil || r.line != "GET /ws?q=1 HTTP/1.1" || fmt.Sprint(r.header("Host")) != "[h.test]" {
				t.Errorf("worker %v, answer %q", r, firstLine(out))
			}
		})
		t.Run("empty request id", func(t *testing.T) {
			r, out := probe(t, e, "GET / HTTP/1.1\r\nHost: h.test\r\nX-Request-Id:\r\nConnection: close\r\n\r\n", nil)
			if r == nil || len(r.header("X-Request-Id")) != 1 || r.header("X-Request-Id")[0] == "" {
				t.Errorf("worker %v, answer %q", r, out)
			}
		})
		t.Run("duplicate request id", func(t *testing.T) {
			r, out := probe(t, e, "GET / HTTP/1.1\r\nHost: h.test\r\nX-Request-Id: a\r\nx-request-id: b\r\nConnection: close\r\n\r\n", nil)
			if r == nil || fmt.Sprint(r.header("X-Request-Id")) != "[a]" || !strings.Contains(out, "X-Request-Id: a\r\n") || strings.Count(strings.ToLower(out), "x-request-id") != 1 {
				t.Errorf("worker %v, answer %q", r, out)
			}
		})
		t.Run("odd case and folds", func(t *testing.T) {
			r, out := probe(t, e, "GET / HTTP/1.1\r\nHost: h.test\r\nx-FORWARDED-for: 6.6.6.6\r\nX-A: 1\r\n X-Forwarded-For: 7.7.7.7\r\nX-Forwarded-Proto: a\r\n b\r\nforwarded: for=1\r\nConnection: close\r\n\r\n", nil)
			if r == nil {
				t.Fatalf("answer %q", out)
			}
			if fmt.Sprint(r.header("X-Forwarded-For")) != "[127.0.0.1]" || len(r.header("Forwarded")) != 0 || len(r.header("X-Forwarded-Proto")) != 1 {
				t.Errorf("worker %q", r.headers)
			}
		})
	})
}

// TestReview2UpgradeTargetKeptRaw: an upgrade request reaches the worker
// with the target the client sent, as every other request does (corral
// routes on the raw path and never decodes it). The upgrade is written by
// hand from the engine's request, whose parsed URI normalizes the path
// ("%2F" decoded, dot segments and double slashes removed) unless told not
// to; over TLS net/http used to forward it raw.
func TestReview2UpgradeTargetKeptRaw(t *testing.T) {
	const target = "/ws/a%2Fb/../c//d?x=%41"
	forEngine(t, true, func(t *testing.T, e engine) {
		for _, raw := range []string{
			"GET " + target + " HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
			"GET http://h.test" + target + " HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
		} {
			r, out := probe(t, e, raw, echoUpgrade)
			if !strings.HasPrefix(out, "HTTP/1.1 101") || r == nil || r.line != "GET "+target+" HTTP/1.1" {
				t.Errorf("%q: worker got %v, client %q", firstLine(raw), r, firstLine(out))
			}
		}
	})
}

// TestReview2LowercaseHopByHopResponse: a worker that writes its header
// names in lower case (h11, hyper, many others) still has its hop-by-hop
// lines and the names its Connection line lists dropped, and its own
// X-Request-Id replaced. The worker client keeps names as sent, and the
// engine then matches them exactly; net/http canonicalizes them, so TLS
// HTTP/1.1 got this right before it moved to the fasthttp engine.
func TestReview2LowercaseHopByHopResponse(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nconnection: x-secret\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nupgrade: foo\r\nx-request-id: worker\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\nok")
			return true
		})
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		resp, body, err := f.do(t, "GET", "/", nil, "X-Request-Id", "client-id")
		if err != nil || string(body) != "ok" {
			t.Fatalf("%v %q", err, body)
		}
		for _, k := range []string{"X-Secret", "Keep-Alive", "Proxy-Connection", "Upgrade", "Connection"} {
			if v := resp.Header.Values(k); len(v) > 0 {
				t.Errorf("%s reached the client: %q", k, v)
			}
		}
		if v := resp.Header.Values("X-Request-Id"); fmt.Sprint(v) != "[client-id]" {
			t.Errorf("X-Request-Id %q, want the request's own", v)
		}
		if v := resp.Header.Values("X-Kept"); fmt.Sprint(v) != "[yes]" {
			t.Errorf("X-Kept %q", v)
		}
		// A listed name the engine also derives (its default Content-Type)
		// is deleted once, not forever.
		rec2 := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nconnection: content-type, server\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nok")
			return true
		})
		f2 := startFront(t, e, testSettings(), oneApp(nil, rec2.addr))
		if resp, body, err := f2.do(t, "GET", "/", nil); err != nil || resp.StatusCode != 200 || string(body) != "ok" {
			t.Errorf("listed content-type: %v %v %q", resp, err, body)
		}
	})
}

// TestReview2ConnectionListedHost: a client that lists Host on its
// Connection line (the rewrite drops listed names) still has its request
// sent with the authority it asked for. With an absolute-form target the
// engine had nothing to rebuild Host from: the worker client refused the
// request, and the failure was the worker's (502, counted against it,
// passive health), so any client could get healthy workers ejected.
func TestReview2ConnectionListedHost(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		rec := newRecorder(t, nil)
		var fx *appFixture
		f := startFront(t, e, testSettings(), func(p *Proxy) []*appFixture {
			a := testApp("web")
			a.Retries = 0
			a.Passive = config.Passive{Failures: 1, BaseEjection: time.Minute, MaxEjectedPercent: 100}
			fx = newFixture(p, a, rec.addr)
			return []*appFixture{fx}
		})
		for _, target := range []string{"http://h.test/x", "/x"} {
			out := f.rawExchange(t, "GET "+target+" HTTP/1.1\r\nHost: h.test\r\nConnection: host, close\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 200") {
				t.Errorf("%s: client got %q", target, firstLine(out))
				continue
			}
			if r := last(t, rec); r.line != "GET /x HTTP/1.1" || fmt.Sprint(r.header("Host")) != "[h.test]" {
				t.Errorf("%s: worker got %q %q", target, r.line, r.headers)
			}
		}
		for _, b := range fx.backends() {
			if b.Stats.Errors.Load() != 0 || b.EjectedUntil.Load() != 0 {
				t.Errorf("%s blamed: %d errors, ejected=%v", b.ID, b.Stats.Errors.Load(), b.EjectedUntil.Load() != 0)
			}
		}
	})
}

// TestReview2TunnelKeepsTCPKeepAlive: Listen's connections carry no TCP
// keep-alive (an idle HTTP connection is closed by idle_timeout), but a
// tunnel has no idle limit and holds a worker slot while it lives: a
// client that vanishes without a FIN or RST (a phone that lost its
// network) is only found by keep-alive probes. The client side of a
// tunnel turns them on, plain and over TLS.
func TestReview2TunnelKeepsTCPKeepAlive(t *testing.T) {
	for _, overTLS := range []bool{false, true} {
		s := testSettings()
		var roots *x509.CertPool
		if overTLS {
			var cert, key string
			cert, key, roots = selfSigned(t)
			s.TLS = &config.TLS{Cert: cert, Key: key}
		}
		p := newTestProxy(t, s)
		rec := newRecorder(t, echoUpgrade)
		setApps(p, newFixture(p, testApp("web"), rec.addr))
		ln, err := Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		serve := p.Serve
		if overTLS {
			serve = p.ServeTLS
		}
		done := make(chan error, 1)
		go func() { done <- serve(ln) }()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = p.Shutdown(ctx)
			<-done
		})
		var c net.Conn
		if overTLS {
			c, err = tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
		} else {
			c, err = net.Dial("tcp", ln.Addr().String())
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		keepAlive := func() int {
			p.mu.Lock()
			defer p.mu.Unlock()
			v := -1
			for cc := range p.conns {
				rc, err := cc.(*clientConn).Conn.(syscall.Conn).SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				_ = rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
			}
			return v
		}
		br := bufio.NewReader(c)
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: h.test\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("tls=%v: %v %v", overTLS, resp, err)
		} else {
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		if v := keepAlive(); v != 0 {
			t.Errorf("tls=%v: keep-alive connection SO_KEEPALIVE %d, want 0 (Listen's)", overTLS, v)
		}
		_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
			t.Fatalf("tls=%v: %v %v", overTLS, resp, err)
		}
		_, _ = io.WriteString(c, "ping")
		b := make([]byte, 4)
		if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
			t.Fatalf("tls=%v: echo %q %v", overTLS, b, err)
		}
		if v := keepAlive(); v != 1 {
			t.Errorf("tls=%v: tunnel's client connection SO_KEEPALIVE %d, want 1", overTLS, v)
		}
	}
}

// TestReview2TeTrailersListedInConnection: a client that asks for
// trailers the way RFC 9110 10.1.4 says (TE: trailers with a TE connection
// option) has "Te: trailers" reach the worker, as one that leaves the
// option out does: corral relays trailers, and the TE line is read before
// the names Connection lists are dropped.
func TestReview2TeTrailersListedInConnection(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		for _, conn := range []string{"Connection: close\r\n", "Connection: TE\r\nConnection: close\r\n", "Connection: close, te\r\n"} {
			r, out := probe(t, e, "GET / HTTP/1.1\r\nHost: h.test\r\nTE: trailers\r\n"+conn+"\r\n", nil)
			if r == nil || fmt.Sprint(r.header("Te")) != "[trailers]" || len(r.header("Connection")) != 0 {
				t.Errorf("%q: worker got %v, client %q", conn, r, firstLine(out))
			}
		}
	})
}
