package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/corral-dev/corral/config"
)

// recorded is one request exactly as a recording worker received it.
type recorded struct {
	line     string   // request line
	headers  []string // raw header lines in arrival order
	bodyLen  int
	bodySum  string // hex sha256 of the body bytes received
	complete bool   // the body ended as its framing said
	readErr  error  // why reading it stopped early (nil when complete)
}

// header returns every value of name (any case), in order.
func (r *recorded) header(name string) []string {
	var vs []string
	for _, l := range r.headers {
		k, v, _ := strings.Cut(l, ":")
		if strings.EqualFold(k, name) {
			vs = append(vs, strings.TrimSpace(v))
		}
	}
	return vs
}

// recorder is a worker that parses HTTP/1.1 by hand and records every
// request it receives; answer decides what it sends back. It speaks
// keep-alive, so tests see what a pooled worker connection carries.
type recorder struct {
	addr string
	// socket serves the recorder on a Unix socket (addr is its path).
	socket bool
	// idleClose closes a keep-alive connection idle this long (as Node
	// and gunicorn do); 0 keeps it open.
	idleClose time.Duration
	// hold delays every answer.
	hold   time.Duration
	active atomic.Int64 // requests being answered right now
	peak   atomic.Int64
	mu     sync.Mutex
	got    []*recorded
	answer func(r *recorded, c net.Conn, w *bufio.Writer) (keep bool)
}

// okAnswer answers 200 with a short body and keeps the connection.
func okAnswer(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
	_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	return true
}

// echoUpgrade answers an upgrade request with 101 (protocol "echo") and
// then echoes every byte of the tunnel; any other request gets okAnswer.
func echoUpgrade(r *recorded, c net.Conn, w *bufio.Writer) bool {
	if len(r.header("Upgrade")) == 0 {
		return okAnswer(r, c, w)
	}
	_, _ = w.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	_ = w.Flush()
	_, _ = io.Copy(c, c)
	return false
}

func newRecorder(t *testing.T, answer func(r *recorded, c net.Conn, w *bufio.Writer) bool) *recorder {
	return startRecorder(t, &recorder{answer: answer})
}

// startRecorder serves rec (its answer, idleClose and hold as set) on a
// fresh loopback port, or a Unix socket, until the test ends.
func startRecorder(t *testing.T, rec *recorder) *recorder {
	network, addr := "tcp", "127.0.0.1:0"
	if rec.socket {
		network, addr = "unix", filepath.Join(shortTempDir(t), "worker.sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	if rec.answer == nil {
		rec.answer = okAnswer
	}
	rec.addr = ln.Addr().String()
	var wg sync.WaitGroup
	conns := map[net.Conn]struct{}{}
	var cmu sync.Mutex
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			conns[c] = struct{}{}
			cmu.Unlock()
			wg.Go(func() { rec.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		cmu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	})
	return rec
}

func (rec *recorder) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	for {
		if rec.idleClose > 0 {
			_ = c.SetReadDeadline(time.Now().Add(rec.idleClose))
		}
		if _, err := br.Peek(1); err != nil {
			return
		}
		_ = c.SetReadDeadline(time.Time{})
		r, err := readRecorded(br)
		if r != nil {
			r.readErr = err
			rec.mu.Lock()
			rec.got = append(rec.got, r)
			rec.mu.Unlock()
		}
		if err != nil {
			return
		}
		n := rec.active.Add(1)
		for p := rec.peak.Load(); n > p && !rec.peak.CompareAndSwap(p, n); p = rec.peak.Load() {
		}
		if rec.hold > 0 {
			time.Sleep(rec.hold)
		}
		keep := rec.answer(r, c, bw)
		rec.active.Add(-1)
		if bw.Flush() != nil || !keep {
			return
		}
	}
}

// requests returns what was recorded so far.
func (rec *recorder) requests() []*recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]*recorded(nil), rec.got...)
}

// readRecorded reads one request; a request whose body ends early is
// returned with complete=false and the error.
func readRecorded(br *bufio.Reader) (*recorded, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, err
	}
	r := &recorded{line: strings.TrimRight(line, "\r\n")}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return r, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		r.headers = append(r.headers, l)
	}
	return readBody(r, br)
}

// readBody reads the body r's head frames into r's length and sum.
func readBody(r *recorded, br *bufio.Reader) (*recorded, error) {
	h := sha256.New()
	if te := r.header("Transfer-Encoding"); len(te) > 0 && strings.EqualFold(te[len(te)-1], "chunked") {
		for {
			sz, err := br.ReadString('\n')
			if err != nil {
				return r, err
			}
			sz, _, _ = strings.Cut(strings.TrimSpace(sz), ";")
			n, err := strconv.ParseInt(sz, 16, 64)
			if err != nil {
				return r, err
			}
			if n == 0 {
				for { // trailers
					l, err := br.ReadString('\n')
					if err != nil {
						return r, err
					}
					if strings.TrimRight(l, "\r\n") == "" {
						break
					}
				}
				break
			}
			m, err := io.CopyN(h, br, n)
			r.bodyLen += int(m)
			if err != nil {
				r.bodySum = hex.EncodeToString(h.Sum(nil))
				return r, err
			}
			if _, err := br.Discard(2); err != nil {
				return r, err
			}
		}
	} else if cl := r.header("Content-Length"); len(cl) > 0 {
		n, _ := strconv.Atoi(cl[0])
		m, err := io.CopyN(h, br, int64(n))
		r.bodyLen = int(m)
		if err != nil {
			r.bodySum = hex.EncodeToString(h.Sum(nil))
			return r, err
		}
	}
	r.bodySum = hex.EncodeToString(h.Sum(nil))
	r.complete = true
	return r, nil
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// engine is one way clients reach the proxy.
type engine struct {
	name string
	h1   bool // HTTP/1.1 on the wire: raw requests can be written
	tls  bool
}

var engines = []engine{
	{name: "fasthttp-h1", h1: true},
	{name: "tls-h1", h1: true, tls: true},
	{name: "tls-h2", tls: true},
	{name: "h2c"},
}

// front is a proxy served on one engine, with a client for it.
type front struct {
	e      engine
	addr   string
	client *http.Client
	roots  *x509.CertPool
	proxy  *Proxy
}

// url returns the front's URL for path.
func (f *front) url(path string) string {
	if f.e.tls {
		return "https://" + f.addr + path
	}
	return "http://" + f.addr + path
}

// dial opens a raw HTTP/1.1 connection to the front.
func (f *front) dial(t *testing.T) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	if f.e.tls {
		c, err = tls.Dial("tcp", f.addr, &tls.Config{RootCAs: f.roots, NextProtos: []string{"http/1.1"}})
	} else {
		c, err = net.Dial("tcp", f.addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startFront serves p on e.
func startFront(t *testing.T, e engine, s config.Proxy, apps func(p *Proxy) []*appFixture) *front {
	f := &front{e: e}
	if e.tls {
		cert, key, roots := selfSigned(t)
		s.TLS = &config.TLS{Cert: cert, Key: key}
		f.roots = roots
	}
	if e.name == "h2c" {
		s.H2C = true
	}
	p := newTestProxy(t, s)
	f.proxy = p
	setApps(p, apps(p)...)
	var rt http.RoundTripper
	switch e.name {
	case "fasthttp-h1":
		f.addr = serveOn(t, p, p.Serve)
		rt = &http.Transport{}
	case "tls-h1":
		f.addr = serveOn(t, p, p.ServeTLS)
		rt = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
	case "tls-h2":
		f.addr = serveOn(t, p, p.ServeTLS)
		rt = &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: f.roots}}
	case "h2c":
		f.addr = serveOn(t, p, p.Serve)
		rt = &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	t.Cleanup(func() {
		if c, ok := rt.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	})
	f.client = &http.Client{Transport: rt, Timeout: 10 * time.Second}
	return f
}

// oneApp is an app "web" in front of the given worker addresses.
func oneApp(mod func(a *config.App), addrs ...string) func(p *Proxy) []*appFixture {
	return func(p *Proxy) []*appFixture {
		a := testApp("web")
		if mod != nil {
			mod(a)
		}
		return []*appFixture{newFixture(p, a, addrs...)}
	}
}

// do sends a request built by the test and returns status and body.
func (f *front) do(t *testing.T, method, path string, body []byte, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.url(path), rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// rawExchange writes raw on a fresh connection and returns everything the
// front answers until it closes or goes quiet for a moment.
func (f *front) rawExchange(t *testing.T, raw string) string {
	c := f.dial(t)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	b, _ := io.ReadAll(c)
	return string(b)
}

// forEngine runs f once per engine that e selects.
func forEngine(t *testing.T, onlyH1 bool, f func(t *testing.T, e engine)) {
	for _, e := range engines {
		if onlyH1 && !e.h1 {
			continue
		}
		t.Run(e.name, func(t *testing.T) { f(t, e) })
	}
}

// last returns the last recorded request, failing when there is none.
func last(t *testing.T, rec *recorder) *recorded {
	t.Helper()
	got := rec.requests()
	if len(got) == 0 {
		t.Fatal("worker received no request")
	}
	return got[len(got)-1]
}

func TestConformanceForwardingHeaders(t *testing.T) {
	trustedSettings := testSettings()
	trustedSettings.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	forEngine(t, false, func(t *testing.T, e engine) {
		t.Run("untrusted duplicates replaced", func(t *testing.T) {
			rec := newRecorder(t, nil)
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			_, _, err := f.do(t, "GET", "/", nil,
				"X-Forwarded-For", "6.6.6.6", "X-Forwarded-For", "7.7.7.7",
				"X-Forwarded-Host", "evil.test", "X-Forwarded-Host", "evil2.test",
				"X-Forwarded-Proto", "https", "X-Forwarded-Proto", "https",
				"Forwarded", "for=6.6.6.6")
			if err != nil {
				t.Fatal(err)
			}
			r := last(t, rec)
			proto := "http"
			if e.tls {
				proto = "https"
			}
			want := map[string][]string{
				"X-Forwarded-For":   {"127.0.0.1"},
				"X-Forwarded-Host":  {f.addr},
				"X-Forwarded-Proto": {proto},
				"Forwarded":         nil,
			}
			for k, v := range want {
				if got := r.header(k); fmt.Sprint(got) != fmt.Sprint(v) {
					t.Errorf("%s lines %q, want %q (all: %q)", k, got, v, r.headers)
				}
			}
		})
		t.Run("trusted duplicates folded", func(t *testing.T) {
			rec := newRecorder(t, nil)
			f := startFront(t, e, trustedSettings, oneApp(nil, rec.addr))
			if _, _, err := f.do(t, "GET", "/", nil, "X-Forwarded-For", "6.6.6.6", "X-Forwarded-For", "7.7.7.7, 8.8.8.8"); err != nil {
				t.Fatal(err)
			}
			if got := last(t, rec).header("X-Forwarded-For"); fmt.Sprint(got) != "[6.6.6.6, 7.7.7.7, 8.8.8.8, 127.0.0.1]" {
				t.Errorf("X-Forwarded-For lines %q", got)
			}
		})
		t.Run("connection-listed names dropped, own headers kept", func(t *testing.T) {
			if !e.h1 {
				t.Skip("HTTP/2 has no Connection header")
			}
			rec := newRecorder(t, nil)
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			f.rawExchange(t, "GET / HTTP/1.1\r\nHost: h.test\r\nConnection: X-Foo, X-Request-Id\r\nConnection: X-Bar\r\nX-Foo: 1\r\nX-Bar: 2\r\nX-Request-Id: client\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTe: gzip\r\nTrailer: X-T\r\nX-Keep: yes\r\nConnection: close\r\n\r\n")
			r := last(t, rec)
			for _, k := range []string{"X-Foo", "X-Bar", "Keep-Alive", "Proxy-Connection", "Te", "Trailer"} {
				if v := r.header(k); len(v) > 0 {
					t.Errorf("%s forwarded: %q", k, r.headers)
				}
			}
			if id := r.header("X-Request-Id"); len(id) != 1 || id[0] == "client" {
				t.Errorf("X-Request-Id %q, want one id of corral's", id)
			}
			if len(r.header("X-Keep")) != 1 {
				t.Errorf("X-Keep lost: %q", r.headers)
			}
		})
		t.Run("repeated lines kept in order", func(t *testing.T) {
			rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
				_, _ = w.WriteString("HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nSet-Cookie: c=3\r\nContent-Length: 0\r\n\r\n")
				return true
			})
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			resp, _, err := f.do(t, "GET", "/", nil, "X-Tag", "one", "X-Tag", "two", "Cookie", "x=1", "Cookie", "y=2")
			if err != nil {
				t.Fatal(err)
			}
			r := last(t, rec)
			if got := r.header("X-Tag"); strings.Join(got, ",") != "one,two" && strings.Join(got, ",") != "one, two" {
				t.Errorf("X-Tag %q", got)
			}
			if got := strings.Join(r.header("Cookie"), "; "); !strings.Contains(got, "x=1") || !strings.Contains(got, "y=2") {
				t.Errorf("cookies %q", got)
			}
			if got := resp.Header.Values("Set-Cookie"); len(got) != 3 {
				t.Errorf("Set-Cookie %q", got)
			}
		})
		t.Run("no headers the client did not send", func(t *testing.T) {
			rec := newRecorder(t, nil)
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			req, _ := http.NewRequest("POST", f.url("/"), bytes.NewReader([]byte("hello")))
			req.Header["User-Agent"] = nil
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			r := last(t, rec)
			if v := r.header("Content-Type"); len(v) > 0 {
				t.Errorf("Content-Type %q added", v)
			}
			if v := r.header("User-Agent"); len(v) > 0 {
				t.Errorf("User-Agent %q added", v)
			}
			if r.bodyLen != 5 || !r.complete {
				t.Errorf("body %d bytes complete=%v", r.bodyLen, r.complete)
			}
		})
	})
}

func TestConformanceUpgradeWithout101IsNoTunnel(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		rec := newRecorder(t, nil) // answers 200 keep-alive to everything
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		c := f.dial(t)
		_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		// The next request on the same client connection must be parsed and
		// rewritten like any other, not passed through a raw tunnel.
		_, _ = io.WriteString(c, "GET /next HTTP/1.1\r\nHost: h.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := rec.requests()
		if len(got) != 2 {
			t.Fatalf("worker got %d requests", len(got))
		}
		if xff := got[1].header("X-Forwarded-For"); fmt.Sprint(xff) != "[127.0.0.1]" {
			t.Errorf("second request reached the worker unrewritten: %q", got[1].headers)
		}
	})
}

func TestConformanceUpgradeAnswers(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		t.Run("101 for another protocol is 502", func(t *testing.T) {
			rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
				_, _ = w.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: something-else\r\n\r\n")
				return false
			})
			f := startFront(t, e, testSettings(), oneApp(func(a *config.App) { a.Retries = 0 }, rec.addr))
			out := f.rawExchange(t, "GET /ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 502") {
				t.Errorf("answer %q", out)
			}
		})
		t.Run("426 relayed", func(t *testing.T) {
			rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
				_, _ = w.WriteString("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
				return true
			})
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			out := f.rawExchange(t, "GET /ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /two HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n")
			if !strings.HasPrefix(out, "HTTP/1.1 426") || !strings.Contains(out, "nope") || strings.Count(out, "HTTP/1.1 ") != 2 {
				t.Errorf("answer %q", out)
			}
			if n := len(rec.requests()); n != 2 {
				t.Errorf("worker got %d requests, want 2", n)
			}
		})
	})
}

func TestConformanceTruncatedUploadNeverArrivesWhole(t *testing.T) {
	for _, size := range []int{20000, 1 << 20} {
		forEngine(t, true, func(t *testing.T, e engine) {
			rec := newRecorder(t, nil)
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			c := f.dial(t)
			fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: h.test\r\nContent-Length: %d\r\n\r\n", size)
			_, _ = c.Write(bytes.Repeat([]byte("x"), size*6/10))
			_ = c.Close()
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) {
				for _, r := range rec.requests() {
					if r.complete {
						t.Fatalf("size %d: worker received a complete request of %d bytes: %q", size, r.bodyLen, r.headers)
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func TestConformanceAbsoluteFormTarget(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		rec := newRecorder(t, nil)
		f := startFront(t, e, testSettings(), oneApp(func(a *config.App) { a.PathPrefix = "/api"; a.StripPrefix = true }, rec.addr))
		out := f.rawExchange(t, "GET http://h.test/api/x?q=1 HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Fatalf("answer %q", out)
		}
		r := last(t, rec)
		if r.line != "GET /x?q=1 HTTP/1.1" {
			t.Errorf("request line %q", r.line)
		}
		if h := r.header("Host"); fmt.Sprint(h) != "[h.test]" {
			t.Errorf("Host %q", h)
		}
	})
}

func TestConformanceWorkerDiesMidBody(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
			return false // closes without the last chunk
		})
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		_, body, err := f.do(t, "GET", "/", nil)
		if err == nil {
			t.Fatalf("response ended cleanly with %q; want an aborted response", body)
		}
	})
}

// TestConformanceSmugglingRejected sends requests a worker could frame
// differently from corral. Each is refused with a 400 and never reaches a
// worker; the one allowance is that an obs-fold may be replaced with
// spaces (RFC 9112 5.2). Plain HTTP/1.1 and HTTP/1.1 over TLS are one
// engine, so they answer the same.
func TestConformanceSmugglingRejected(t *testing.T) {
	type verdict func(e engine, out string, got []*recorded) string
	rejected := func(_ engine, out string, got []*recorded) string {
		if !strings.HasPrefix(out, "HTTP/1.1 400") {
			return "answer " + firstLine(out) + ", want 400"
		}
		for _, r := range got {
			if r.complete && r.bodyLen > 0 {
				return fmt.Sprintf("worker received %q with a %d-byte body", r.line, r.bodyLen)
			}
		}
		return ""
	}
	unfolded := func(e engine, out string, got []*recorded) string {
		if strings.HasPrefix(out, "HTTP/1.1 200") {
			for _, r := range got {
				for _, l := range r.headers {
					if l[0] == ' ' || l[0] == '\t' {
						return fmt.Sprintf("obs-fold forwarded: %q", r.headers)
					}
				}
			}
			return ""
		}
		return rejected(e, out, got)
	}
	cases := []struct {
		name, raw string
		ok        verdict
	}{
		{"cl and te", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", rejected},
		{"te and cl", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX", rejected},
		{"conflicting cl", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", rejected},
		{"cl list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd", rejected},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\nConnection: close\r\n\r\n", unfolded},
		{"space before colon", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 3\r\n\r\nabc", rejected},
		{"bad chunk size", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", rejected},
		{"invalid header byte", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", rejected},
		{"te not chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", rejected},
	}
	forEngine(t, true, func(t *testing.T, e engine) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				rec := newRecorder(t, nil)
				f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
				out := f.rawExchange(t, c.raw)
				if msg := c.ok(e, out, rec.requests()); msg != "" {
					t.Error(msg)
				}
			})
		}
	})
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}

func TestConformanceFraming(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		t.Run("head 204 304 carry no body", func(t *testing.T) {
			rec := newRecorder(t, func(r *recorded, _ net.Conn, w *bufio.Writer) bool {
				switch {
				case strings.HasPrefix(r.line, "HEAD"):
					_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
				case strings.Contains(r.line, "/204"):
					_, _ = w.WriteString("HTTP/1.1 204 No Content\r\n\r\n")
				default:
					_, _ = w.WriteString("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
				}
				return true
			})
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			c := f.dial(t)
			_, _ = io.WriteString(c, "HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /204 HTTP/1.1\r\nHost: h\r\n\r\nGET /304 HTTP/1.1\r\nHost: h\r\n\r\n")
			br := bufio.NewReader(c)
			for _, want := range []struct {
				method string
				status int
			}{{"HEAD", 200}, {"GET", 204}, {"GET", 304}} {
				resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
				if err != nil {
					t.Fatalf("%s %d: %v", want.method, want.status, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want.status || len(b) != 0 {
					t.Fatalf("got %d with %d body bytes, want %d", resp.StatusCode, len(b), want.status)
				}
			}
		})
		t.Run("expect 100-continue", func(t *testing.T) {
			rec := newRecorder(t, nil)
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			c := f.dial(t)
			_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			br := bufio.NewReader(c)
			line, _ := br.ReadString('\n')
			if !strings.HasPrefix(line, "HTTP/1.1 100") {
				t.Fatalf("first line %q", line)
			}
			_, _ = br.ReadString('\n')
			_, _ = io.WriteString(c, "hello")
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%v %v", resp, err)
			}
			r := last(t, rec)
			if len(r.header("Expect")) > 0 || r.bodyLen != 5 || r.bodySum != sum([]byte("hello")) {
				t.Errorf("worker got %q body %d", r.headers, r.bodyLen)
			}
		})
	})
}

// TestConformanceStaleWorkerConnection sends a 1 MiB upload (streamed, not
// held) on a pooled worker connection that the worker closed while idle:
// it must arrive whole on a fresh connection, never truncated.
func TestConformanceStaleWorkerConnection(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		rec := startRecorder(t, &recorder{idleClose: 300 * time.Millisecond})
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
		for i := range 3 {
			if _, _, err := f.do(t, "GET", "/warm", nil); err != nil {
				t.Fatal(err)
			}
			time.Sleep(600 * time.Millisecond) // the worker closes the idle connection
			resp, _, err := f.do(t, "POST", "/up", body)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("upload %d: %v %v", i, resp, err)
			}
		}
		for _, r := range rec.requests() {
			if strings.HasPrefix(r.line, "POST") && (!r.complete || r.bodyLen != len(body) || r.bodySum != sum(body)) {
				t.Errorf("worker got a broken upload: %d of %d bytes, complete=%v", r.bodyLen, len(body), r.complete)
			}
		}
	})
}

// TestConformanceClientFailuresAreNotTheWorkers has clients abandon and
// stall 1 MiB uploads: they are counted as client failures (499, 408),
// never as worker errors, and the worker is never ejected.
func TestConformanceClientFailuresAreNotTheWorkers(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		rec := newRecorder(t, nil)
		var fx *appFixture
		s := testSettings()
		s.ReadTimeout = 500 * time.Millisecond
		f := startFront(t, e, s, func(p *Proxy) []*appFixture {
			a := testApp("web")
			a.Passive = config.Passive{Failures: 3, BaseEjection: time.Minute, MaxEjectedPercent: 100}
			fx = newFixture(p, a, rec.addr, rec.addr)
			return []*appFixture{fx}
		})
		for range 6 {
			c := f.dial(t)
			fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", 1<<20)
			_, _ = c.Write(bytes.Repeat([]byte("x"), 300<<10))
			_ = c.Close()
		}
		// A stalled upload: the client sends part and then nothing.
		c := f.dial(t)
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", 1<<20)
		_, _ = c.Write(bytes.Repeat([]byte("x"), 300<<10))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if !strings.HasPrefix(line, "HTTP/1.1 408") && line != "" {
			t.Errorf("stalled upload answered %q, want 408 or a close", line)
		}
		waitFor(t, "uploads to end", 5*time.Second, func() bool {
			n := int64(0)
			for _, b := range fx.backends() {
				n += b.Inflight.Load()
			}
			return n == 0 && fx.stats.ClientCancelled.Load() >= 6
		})
		for _, b := range fx.backends() {
			if b.Stats.Errors.Load() != 0 || b.EjectedUntil.Load() != 0 || b.ConsecutiveFailures.Load() != 0 {
				t.Errorf("%s blamed: %d errors, ejected=%v, %d failures in a row", b.ID, b.Stats.Errors.Load(), b.EjectedUntil.Load() != 0, b.ConsecutiveFailures.Load())
			}
		}
		for _, r := range rec.requests() {
			if r.complete {
				t.Errorf("worker got a complete request from a broken upload: %d bytes", r.bodyLen)
			}
		}
	})
}

// TestConformanceReloadReachesRunningWorkers raises max_inflight and lowers
// response_header_timeout while the worker's connection pools exist: both
// apply to the next requests.
func TestConformanceReloadReachesRunningWorkers(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		rec := startRecorder(t, &recorder{hold: 300 * time.Millisecond})
		var fx *appFixture
		f := startFront(t, e, testSettings(), func(p *Proxy) []*appFixture {
			a := testApp("web")
			a.MaxInflight = 1
			fx = newFixture(p, a, rec.addr)
			return []*appFixture{fx}
		})
		if _, _, err := f.do(t, "GET", "/", nil); err != nil { // the pools exist now
			t.Fatal(err)
		}
		wider := *fx.app
		wider.MaxInflight = 4
		fx.app = &wider
		fx.publish(fx.backends()...)
		setApps(f.proxy, fx)
		var wg sync.WaitGroup
		codes := make(chan int, 4)
		for range 4 {
			wg.Go(func() {
				resp, _, err := f.do(t, "GET", "/", nil)
				if err != nil {
					codes <- 0
					return
				}
				codes <- resp.StatusCode
			})
		}
		wg.Wait()
		close(codes)
		for c := range codes {
			if c != 200 {
				t.Errorf("status %d after max_inflight 1 -> 4", c)
			}
		}
		if rec.peak.Load() < 2 {
			t.Errorf("worker saw at most %d requests at once", rec.peak.Load())
		}
		s := f.proxy.settings.Load()
		shorter := *s
		shorter.ResponseHeaderTimeout = 100 * time.Millisecond
		f.proxy.SetSettings(shorter)
		for _, body := range [][]byte{nil, bytes.Repeat([]byte("x"), 1<<20)} {
			method := "GET"
			if body != nil {
				method = "POST"
			}
			resp, _, err := f.do(t, method, "/", body)
			if err != nil || resp.StatusCode != 504 {
				t.Errorf("%s after response_header_timeout 5s -> 100ms: %v %v, want 504", method, resp, err)
			}
		}
	})
}

// TestConformanceReloadAppliesListenerSettings lowers max_header_bytes and
// turns h2c on while the proxy serves: connections accepted afterwards get
// the new settings; one opened before keeps working.
func TestConformanceReloadAppliesListenerSettings(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		rec := newRecorder(t, nil)
		s := testSettings()
		s.MaxHeaderBytes = 16 << 10
		f := startFront(t, e, s, oneApp(nil, rec.addr))
		big := strings.Repeat("a", 8<<10)
		before := f.dial(t)
		opened := time.Now()
		if out := f.rawExchange(t, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: "+big+"\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(out, "HTTP/1.1 200") {
			t.Fatalf("before: %q", firstLine(out))
		}
		smaller := *f.proxy.settings.Load()
		smaller.MaxHeaderBytes = 4 << 10
		smaller.H2C = true
		f.proxy.SetSettings(smaller)
		waitFor(t, "new connections to get max_header_bytes = 4 KiB", 5*time.Second, func() bool {
			return strings.HasPrefix(f.rawExchange(t, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: "+big+"\r\nConnection: close\r\n\r\n"), "HTTP/1.1 431")
		})
		t.Logf("reload applied after %v", time.Since(opened))
		// The connection from before the reload still works.
		_, _ = io.WriteString(before, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
		if line, _ := bufio.NewReader(before).ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Errorf("connection opened before the reload: %q", line)
		}
		if e.tls {
			return
		}
		h2c := &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
		resp, err := h2c.Get(f.url("/"))
		if err != nil {
			t.Fatalf("h2c after turning it on: %v", err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Errorf("proto %s", resp.Proto)
		}
	})
}

// TestConformanceTrailers has a worker send trailers after a chunked body:
// they reach the client on every engine.
func TestConformanceTrailers(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n")
			return true
		})
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		resp, body, err := f.do(t, "GET", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(body) != "hello" || resp.Trailer.Get("X-Checksum") != "abc" {
			t.Errorf("body %q trailers %v", body, resp.Trailer)
		}
	})
}

// TestConformanceCookieLinesUntouched: Cookie lines reach the worker as the
// client wrote them, each its own line, in place (the HTTP/1.1 engine
// re-serializes cookies once anything collects them).
// A sticky app reads its cookie from them without changing them.
func TestConformanceCookieLinesUntouched(t *testing.T) {
	sticky := func(a *config.App) {
		a.Balance = config.BalanceCookie
		a.StickyCookie = "b"
	}
	for _, mod := range []func(*config.App){nil, sticky} {
		forEngine(t, true, func(t *testing.T, e engine) { testCookieLines(t, e, mod) })
	}
}

func testCookieLines(t *testing.T, e engine, mod func(*config.App)) {
	{
		rec := newRecorder(t, nil)
		f := startFront(t, e, testSettings(), oneApp(mod, rec.addr))
		f.rawExchange(t, "GET / HTTP/1.1\r\nHost: h.test\r\nCookie: a=1;b=2\r\nX-Mid: m\r\nCookie: c; d=\"q\"\r\nConnection: close\r\n\r\n")
		var got []string
		for _, l := range last(t, rec).headers {
			if k, _, _ := strings.Cut(l, ":"); k == "Cookie" || k == "X-Mid" {
				got = append(got, l)
			}
		}
		if want := `[Cookie: a=1;b=2 X-Mid: m Cookie: c; d="q"]`; fmt.Sprint(got) != want {
			t.Errorf("worker got %q, want %s", got, want)
		}
	}
}

// TestConformanceNoContentTypeInvented: a worker's answer without a
// Content-Type reaches the client without one, on every engine: a type
// corral made up ("text/plain" from the engine's default, or one sniffed
// from the first bytes) would change how a browser renders the body.
func TestConformanceNoContentTypeInvented(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n<html>hi</html>")
			return true
		})
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		resp, body, err := f.do(t, "GET", "/", nil)
		if err != nil || string(body) != "<html>hi</html>" {
			t.Fatalf("GET: %v %q", err, body)
		}
		if v, ok := resp.Header["Content-Type"]; ok {
			t.Fatalf("the client got Content-Type %q; the worker sent none", v)
		}
	})
}

// TestConformanceStreamedHeadNotHeldForTheFirstByte: a response of unknown
// length (a server-sent-events stream, a long poll) reaches the client
// head first, before the worker has sent a byte of its body: a client
// waits for the head before it waits for events. The worker sends its
// first bytes only once the client has the head, or after 5 s.
func TestConformanceStreamedHeadNotHeldForTheFirstByte(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		gotHead := make(chan struct{})
		timedOut := make(chan bool, 1)
		rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
			_ = w.Flush()
			select {
			case <-gotHead:
				timedOut <- false
			case <-time.After(5 * time.Second):
				timedOut <- true
			}
			_, _ = w.WriteString("6\r\ndata:1\r\n0\r\n\r\n")
			return true
		})
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		resp, err := f.client.Get(f.url("/events"))
		if err != nil {
			t.Fatal(err)
		}
		close(gotHead)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "data:1" {
			t.Fatalf("body %q, %v", body, err)
		}
		if <-timedOut {
			t.Fatal("the client got the head only with the first body bytes")
		}
	})
}
