package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// rawProxy starts a proxy in front of a backend that counts requests, and
// returns the proxy address and the counter.
func rawProxy(t *testing.T, mod func(s *config.Proxy)) (string, *atomic.Int64) {
	var n atomic.Int64
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("ok"))
	})
	s := testSettings()
	if mod != nil {
		mod(&s)
	}
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), addrOf(be)))
	return strings.TrimPrefix(startProxy(t, p), "http://"), &n
}

// roundTrip writes raw to addr and returns the status line of the answer
// ("" when the connection closed without one).
func roundTrip(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

func TestHostileRequests(t *testing.T) {
	addr, n := rawProxy(t, nil)
	huge := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n"
	cases := []struct{ name, raw, want string }{
		{"cl and te", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"},
		{"two different cl", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"},
		{"invalid cl", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\nabc", "400"},
		{"negative cl", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc", "400"},
		{"huge header", huge, "431"},
		{"body over limit", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\nabc", "413"},
		{"garbage request line", "HELLO\r\n\r\n", "400"},
		{"bad te", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", "400"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := roundTrip(t, addr, c.raw)
			if !strings.HasPrefix(got, "HTTP/1.1 "+c.want) {
				t.Fatalf("answered %q, want %s", got, c.want)
			}
		})
	}
	if n.Load() != 0 {
		t.Fatalf("%d hostile requests reached the worker", n.Load())
	}
	if got := roundTrip(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); got != "HTTP/1.1 200 OK" {
		t.Fatalf("normal request: %q", got)
	}
	if got := roundTrip(t, addr, "GET / HTTP/1.0\r\n\r\n"); !strings.HasSuffix(got, " 200 OK") {
		t.Fatalf("HTTP/1.0 request without Host: %q", got)
	}
}

func TestHTTP10ClientGetsUnchunkedBody(t *testing.T) {
	be := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "part1,")
		w.(http.Flusher).Flush() // the worker answers chunked
		_, _ = io.WriteString(w, "part2")
	}))
	p := newTestProxy(t, testSettings())
	setApps(p, newFixture(p, testApp("web"), be))
	url := startProxy(t, p)
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	// Unknown length to an HTTP/1.0 client: no chunks (it cannot read
	// them), the end is the connection's close (nothing buffered).
	if len(resp.TransferEncoding) > 0 || resp.ContentLength != -1 || !resp.Close || string(body) != "part1,part2" {
		t.Fatalf("HTTP/1.0 answer: te %v length %d body %q", resp.TransferEncoding, resp.ContentLength, body)
	}
}

func TestExpectContinue(t *testing.T) {
	addr, n := rawProxy(t, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	br := bufio.NewReader(c)
	if line, _ := br.ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("interim answer %q", line)
	}
	_, _ = br.ReadString('\n')
	_, _ = io.WriteString(c, "hello")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("final answer %v %v", resp, err)
	}
	if n.Load() != 1 {
		t.Fatalf("worker saw %d requests", n.Load())
	}
}

func TestSlowHeaderClosesConnection(t *testing.T) {
	addr, n := rawProxy(t, func(s *config.Proxy) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := io.ReadAll(c) // returns when the proxy closes the connection
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", time.Since(start))
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 408") {
		t.Fatalf("answered %q, want 408 or nothing", got)
	}
	if n.Load() != 0 {
		t.Fatal("slow request reached the worker")
	}
}

// TestHeaderNameWithSpaceNeverForwarded: a field name is a token (RFC 9110
// 5.1); the engine accepts a name with a space inside ("Transfer
// Encoding: chunked") and would forward it as is, for a worker to read
// however it likes. corral answers 400 and the worker receives nothing.
// (Found by FuzzServeFraming.)
func TestHeaderNameWithSpaceNeverForwarded(t *testing.T) {
	rec := newRecorder(t, nil)
	f := startFront(t, engines[0], testSettings(), oneApp(nil, rec.addr))
	for _, raw := range []string{
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n",
	} {
		if out := f.rawExchange(t, raw); !strings.HasPrefix(out, "HTTP/1.1 400 ") {
			t.Errorf("%q answered %q, want 400", raw, out)
		}
	}
	if got := rec.requests(); len(got) > 0 {
		t.Fatalf("worker received %q %q", got[0].line, got[0].headers)
	}
}

// TestWorkerAnswerHeadIsCorralsOwn: corral answers in its own HTTP
// version (RFC 9110 6.2), so an HTTP/1.0 worker's answer does not reach an
// HTTP/1.1 client as "HTTP/1.0" with a chunked body (which RFC 9112 6.1
// tells the client to treat as faulty framing); and a worker's header
// name with a space inside does not parse: 502, not forwarded. (Both
// found by FuzzWorkerAnswer.)
func TestWorkerAnswerHeadIsCorralsOwn(t *testing.T) {
	for _, c := range []struct{ answer, want, body string }{
		{"HTTP/1.0 200 OK\r\n\r\nbody", "HTTP/1.1 200 OK", "body"},
		{"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nbody", "HTTP/1.1 200 OK", "body"},
		{"HTTP/1.1 200 OK\r\nX Y: z\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 502 ", ""},
	} {
		rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
			_, _ = w.WriteString(c.answer)
			return false
		})
		f := startFront(t, engines[0], testSettings(), oneApp(nil, rec.addr))
		out := f.rawExchange(t, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, c.want) || strings.Contains(out, "X Y") {
			t.Errorf("worker answered %q; client got %q, want %q", c.answer, out, c.want)
			continue
		}
		if c.body == "" {
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
		if err != nil {
			t.Fatalf("client got %q: %v", out, err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != c.body {
			t.Errorf("worker answered %q; client read body %q", c.answer, b)
		}
	}
}
