package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzRewriteRequest: for any request head the HTTP/1.1 engine accepts,
// the rewrite leaves no hop-by-hop line but its own Connection/Upgrade
// pair, exactly one of each of corral's forwarding lines (untrusted peer),
// and never panics.
func FuzzRewriteRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-A, te\r\nTE: trailers\r\nX-A: 1\r\nKeep-Alive: 5\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\nForwarded: for=x\r\nX-Request-Id:\r\nX-Request-Id: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-proto, x-request-id, connection\r\nProxy-Connection: x\r\nExpect: 100-continue\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	ids := newRequestIDs()
	f.Fuzz(func(t *testing.T, head []byte) {
		fw := forwarding{peer: netip.MustParseAddr("192.0.2.1"), proto: strHTTP, host: []byte("a"), start: time.Unix(1, 0), ids: ids}
		var h fasthttp.RequestHeader
		if h.Read(bufio.NewReader(bytes.NewReader(head))) == nil {
			// serveFast keeps the client's close to itself before the
			// rewrite (TestHTTP10ClientKeepsWorkerConnection; this input's
			// seed came from here: an HTTP/1.0 head forwarded "Connection:
			// close").
			h.ResetConnectionClose()
			upgrade, _, _ := rewriteRequest(fastRequestHeaders{&h}, &fw, nil)
			lines := map[string][]string{}
			for k, v := range h.All() {
				name := strings.ToLower(string(k))
				lines[name] = append(lines[name], string(v))
			}
			checkRewritten(t, "the HTTP/1.1 engine", lines, upgrade)
		}
		// The same head as the net/http engine (HTTP/2, h2c) hands it over.
		if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head))); err == nil {
			upgrade, _, _ := rewriteRequest(&stdHeaders{h: req.Header}, &fw, nil)
			lines := map[string][]string{}
			for k, vs := range req.Header {
				lines[strings.ToLower(k)] = append(lines[strings.ToLower(k)], vs...)
			}
			checkRewritten(t, "net/http", lines, upgrade)
		}
	})
}

// checkRewritten checks a rewritten head, its values by lowercase name:
// no hop-by-hop line but corral's own Connection/Upgrade pair for an
// upgrade, and exactly one of each of corral's forwarding lines, its
// X-Forwarded-For the untrusted peer's address alone.
func checkRewritten(t *testing.T, engine string, lines map[string][]string, upgrade []byte) {
	t.Helper()
	for _, name := range []string{"keep-alive", "proxy-connection", "proxy-authorization", "trailer", "expect", "forwarded"} {
		if len(lines[name]) > 0 {
			t.Fatalf("%s: %s forwarded: %q", engine, name, lines)
		}
	}
	if upgrade == nil && (len(lines["connection"]) > 0 || len(lines["upgrade"]) > 0) {
		t.Fatalf("%s: Connection/Upgrade forwarded without an upgrade: %q", engine, lines)
	}
	for _, name := range []string{"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-start", "x-request-id"} {
		if len(lines[name]) != 1 {
			t.Fatalf("%s: %d %s lines: %q", engine, len(lines[name]), name, lines)
		}
	}
	if v := lines["x-forwarded-for"][0]; v != "192.0.2.1" {
		t.Fatalf("%s: X-Forwarded-For %q from an untrusted peer", engine, v)
	}
	if te := lines["te"]; len(te) > 1 || (len(te) == 1 && te[0] != "trailers") {
		t.Fatalf("%s: Te %q", engine, te)
	}
}

// TestHTTP10ClientKeepsWorkerConnection: an HTTP/1.0 client's request goes
// to the worker as HTTP/1.1 without Connection: close, so the pooled
// worker connection is kept; the client's own connection still closes
// after its answer.
func TestHTTP10ClientKeepsWorkerConnection(t *testing.T) {
	rec := newRecorder(t, nil)
	f := startFront(t, engines[0], testSettings(), oneApp(nil, rec.addr))
	for range 2 {
		out := f.rawExchange(t, "GET / HTTP/1.0\r\nHost: h.test\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.") || !strings.Contains(out, " 200 ") {
			t.Fatalf("answer %q", out)
		}
	}
	for _, r := range rec.requests() {
		if v := r.header("Connection"); len(v) > 0 || !strings.HasSuffix(r.line, "HTTP/1.1") {
			t.Errorf("worker got %q with Connection %q", r.line, v)
		}
	}
}

// FuzzServeFraming sends any bytes to the HTTP/1.1 engine as a client's
// stream (one request, a pipeline, or garbage), then half-closes, with a
// recording worker behind it. Whatever the client sent, the worker only
// receives well-formed requests, framed one way (one Content-Length or
// chunked, never both), with every body whole or, when it streamed and
// its client cut it, visibly cut, and every request the worker answers reaches
// the client: nothing smuggled in, nothing truncated, nothing answered
// twice or lost.
func FuzzServeFraming(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nhi",
		"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
		"GET http://b/x HTTP/1.1\r\nHost: a\r\nX: 1\r\n folded\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		// Unix sockets on both sides: tens of thousands of executions
		// would leave as many loopback ports in TIME_WAIT.
		rec := startRecorder(t, &recorder{socket: true, answer: func(r *recorded, c net.Conn, w *bufio.Writer) bool {
			if len(r.header("Upgrade")) > 0 {
				return echoUpgrade(r, c, w)
			}
			_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Answered: yes\r\n\r\nok")
			return true
		}})
		c := frontOnSocket(t, rec.addr)
		_, _ = c.Write(stream)
		_ = c.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		out, _ := io.ReadAll(c)
		_ = c.Close()

		answered := bytes.Count(out, []byte("\r\nX-Answered: yes\r\n"))
		got := rec.requests()
		upgraded, complete := false, 0
		for _, r := range got {
			if bad := malformed(r); bad != "" {
				t.Fatalf("worker received %s: %q %q", bad, r.line, r.headers)
			}
			upgraded = upgraded || len(r.header("Upgrade")) > 0
			if r.complete {
				complete++
				continue
			}
			// Only a body of unknown length streams (README: Retries); cut
			// short by its client, it reaches the worker as an abort: the
			// connection ends inside the body, never a body that parses
			// as whole, nor bytes that are not the chunked framing.
			if len(r.header("Transfer-Encoding")) == 0 {
				t.Fatalf("worker received %q with a body cut at %d bytes (%v); a body with a Content-Length is held and arrives whole", r.line, r.bodyLen, r.readErr)
			}
			if !errors.Is(r.readErr, io.EOF) && !errors.Is(r.readErr, io.ErrUnexpectedEOF) && !errors.Is(r.readErr, syscall.ECONNRESET) {
				t.Fatalf("worker received %q with a chunked body it could not parse: %v", r.line, r.readErr)
			}
		}
		if !upgraded && answered != complete {
			t.Fatalf("the worker answered %d requests, the client saw %d answers:\n%q", complete, answered, out)
		}
	})
}

// malformed says what is wrong with a request as forwarded, or "".
func malformed(r *recorded) string {
	parts := strings.Split(r.line, " ")
	if len(parts) != 3 || parts[2] != "HTTP/1.1" || !isToken(parts[0]) || parts[1] == "" || hasCTL(parts[1]) {
		return "a malformed request line"
	}
	for _, l := range r.headers {
		name, value, ok := strings.Cut(l, ":")
		if !ok || !isToken(name) {
			return "a malformed header line"
		}
		for _, b := range []byte(value) {
			if b < 0x20 && b != '\t' || b == 0x7f {
				return "a control byte in a header value"
			}
		}
	}
	cl, te := r.header("Content-Length"), r.header("Transfer-Encoding")
	switch {
	case len(r.header("Host")) != 1:
		return fmt.Sprintf("%d Host lines", len(r.header("Host")))
	case len(cl) > 1:
		return "more than one Content-Length"
	case len(cl) == 1 && len(te) > 0:
		return "both Content-Length and Transfer-Encoding"
	case len(te) > 1 || len(te) == 1 && !strings.EqualFold(te[0], "chunked"):
		return "a Transfer-Encoding other than chunked"
	case len(cl) == 1 && strings.TrimLeft(cl[0], "0123456789") != "":
		return "a Content-Length that is not a number"
	}
	return ""
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, b := range []byte(s) {
		if b <= ' ' || b >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", b) >= 0 {
			return false
		}
	}
	return true
}

func hasCTL(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0
}

// frontOnSocket serves the HTTP/1.1 engine, in front of the worker at
// addr, on a Unix socket, and returns a client connection to it.
func frontOnSocket(t *testing.T, addr string) *net.UnixConn {
	p := newTestProxy(t, testSettings())
	setApps(p, oneApp(nil, addr)(p)...)
	path := filepath.Join(shortTempDir(t), "front.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.UnixConn)
}

// FuzzWorkerAnswer has the worker answer a GET with any bytes, then close.
// Whatever it sent, the client receives one well-formed response (502
// for an answer that does not parse) framed one way, with no hop-by-hop
// line of the worker's and nothing after its body; or, when the worker's
// body broke off, a response cut short (the abort; nothing at all when it
// broke before its first byte), never one that reads as complete with
// bytes missing.
func FuzzWorkerAnswer(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"garbage\r\n\r\n",
		"HTTP/1.1 999 Odd\r\nX Y: z\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, answer []byte) {
		if status000.Match(answer) {
			return // read as 200 by the engine (TestEngineReadsStatus000As200)
		}
		rec := startRecorder(t, &recorder{socket: true, answer: func(_ *recorded, c net.Conn, w *bufio.Writer) bool {
			_, _ = w.Write(answer)
			return false
		}})
		c := frontOnSocket(t, rec.addr)
		_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		_ = c.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		out, _ := io.ReadAll(c)
		if len(out) == 0 && headParses(answer) {
			// The HTTP/1.1 engine writes a head of known length with the
			// first bytes of its body: a worker body that broke before any
			// byte is the abort with nothing sent, a close no client takes
			// for an answer.
			return
		}
		if bad := checkAnswer(out, listedNames(answer)); bad != "" {
			t.Fatalf("the worker answered %q; the client got %s:\n%q", answer, bad, out)
		}
	})
}

// status000 matches an answer whose status line the engine parses as
// status 0, which its StatusCode reports as 200.
var status000 = regexp.MustCompile(`^HTTP/[0-9]\.[0-9] 000`)

// TestEngineReadsStatus000As200 pins a gap of the HTTP/1.1 engine: a
// worker status line of "000" parses as status 0, and the engine reports 0
// as 200, so corral cannot tell it from a 200 (README: Choices). Any other
// status below 100 is read as it is, and corral answers it with a 502.
func TestEngineReadsStatus000As200(t *testing.T) {
	for status, want := range map[string]int{"000": 200, "001": 1, "099": 99} {
		var resp fasthttp.Response
		if err := resp.Read(bufio.NewReader(strings.NewReader("HTTP/1.1 " + status + " x\r\nContent-Length: 0\r\n\r\n"))); err != nil {
			t.Fatalf("%s: %v", status, err)
		}
		if got := resp.StatusCode(); got != want {
			t.Errorf("status line %s: the engine reports %d, want %d", status, got, want)
		}
	}
}

// headParses reports whether answer starts with a response head that
// net/http reads as one, of a response that has a body.
func headParses(answer []byte) bool {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(answer)), &http.Request{Method: "GET"})
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode != 204 && resp.StatusCode != 304
}

// listedNames are the names on the Connection lines of a worker's answer,
// lowercase: hop-by-hop for that answer.
func listedNames(answer []byte) map[string]bool {
	names := map[string]bool{}
	for _, l := range strings.Split(string(answer), "\n") {
		name, value, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "connection") {
			continue
		}
		for _, n := range strings.Split(value, ",") {
			names[strings.ToLower(strings.TrimSpace(n))] = true
		}
	}
	return names
}

// checkAnswer says what is wrong with out, one response as a client read
// it to the connection's close, or "". listed are the names the worker's
// Connection lines made hop-by-hop.
func checkAnswer(out []byte, listed map[string]bool) string {
	br := bufio.NewReader(bytes.NewReader(out))
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "no status line"
		}
		parts := strings.SplitN(strings.TrimRight(line, "\r\n"), " ", 3)
		if len(parts) < 2 || parts[0] != "HTTP/1.1" || len(parts[1]) != 3 || strings.Trim(parts[1], "0123456789") != "" {
			return "a malformed status line"
		}
		status, _ := strconv.Atoi(parts[1])
		r := &recorded{line: line}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return "a head cut short"
			}
			if l = strings.TrimRight(l, "\r\n"); l == "" {
				break
			}
			r.headers = append(r.headers, l)
		}
		for _, l := range r.headers {
			name, _, ok := strings.Cut(l, ":")
			if !ok || !isToken(name) {
				return "a malformed header line"
			}
			switch lower := strings.ToLower(name); {
			case lower == "keep-alive", lower == "proxy-connection", lower == "upgrade":
				return "a hop-by-hop line of the worker's"
			case listed[lower] && lower != "close" && lower != "keep-alive":
				return "a line the worker's Connection line listed"
			}
		}
		if status >= 100 && status < 200 {
			continue // an interim answer; the final one follows
		}
		cl, te := r.header("Content-Length"), r.header("Transfer-Encoding")
		switch {
		case len(cl) > 1:
			return "more than one Content-Length"
		case len(cl) == 1 && len(te) > 0:
			return "both Content-Length and Transfer-Encoding"
		case len(te) > 1 || len(te) == 1 && !strings.EqualFold(te[0], "chunked"):
			return "a Transfer-Encoding other than chunked"
		case (status == 204 || status == 304) && (len(te) > 0 || len(cl) == 1 && cl[0] != "0"):
			return "a body framed on a " + parts[1]
		}
		var rest []byte
		switch {
		case status == 204 || status == 304:
			rest, _ = io.ReadAll(br)
		case len(te) == 1:
			// A chunked body cut short is the abort; one that ends must end
			// the connection's bytes too.
			body := &recorded{headers: []string{"Transfer-Encoding: chunked"}}
			if _, err := readBody(body, br); err != nil {
				return ""
			}
			rest, _ = io.ReadAll(br)
		case len(cl) == 1:
			n, err := strconv.ParseInt(cl[0], 10, 64)
			if err != nil {
				return "a Content-Length that is not a number"
			}
			if m, _ := io.CopyN(io.Discard, br, n); m < n {
				return "" // cut short: the abort
			}
			rest, _ = io.ReadAll(br)
		default:
			return "" // ends at the close
		}
		if len(rest) > 0 {
			return fmt.Sprintf("%d bytes after the body", len(rest))
		}
		return ""
	}
}
