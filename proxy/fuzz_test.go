package proxy

import (
	"bufio"
	"bytes"
	"net/netip"
	"strings"
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
		var h fasthttp.RequestHeader
		if h.Read(bufio.NewReader(bytes.NewReader(head))) != nil {
			return // the engine answers 400
		}
		// serveFast keeps the client's close to itself before the rewrite
		// (TestHTTP10ClientKeepsWorkerConnection; this input's seed came
		// from here: an HTTP/1.0 head forwarded "Connection: close").
		h.ResetConnectionClose()
		fw := forwarding{peer: netip.MustParseAddr("192.0.2.1"), proto: strHTTP, host: []byte("a"), start: time.Unix(1, 0), ids: ids}
		upgrade, _, _ := rewriteRequest(fastRequestHeaders{&h}, &fw, nil)
		count := map[string]int{}
		for k := range h.All() {
			count[strings.ToLower(string(k))]++
		}
		for _, name := range []string{"keep-alive", "proxy-connection", "proxy-authorization", "trailer", "expect", "forwarded"} {
			if count[name] > 0 {
				t.Fatalf("%s forwarded: %q", name, h.Header())
			}
		}
		if upgrade == nil && (count["connection"] > 0 || count["upgrade"] > 0) {
			t.Fatalf("Connection/Upgrade forwarded without an upgrade: %q", h.Header())
		}
		for _, name := range []string{"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-start", "x-request-id"} {
			if count[name] != 1 {
				t.Fatalf("%d %s lines: %q", count[name], name, h.Header())
			}
		}
		if v := h.Peek("X-Forwarded-For"); string(v) != "192.0.2.1" {
			t.Fatalf("X-Forwarded-For %q from an untrusted peer", v)
		}
		if te := h.PeekAll("Te"); len(te) > 1 || (len(te) == 1 && string(te[0]) != "trailers") {
			t.Fatalf("Te %q", te)
		}
	})
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
