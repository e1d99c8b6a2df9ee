package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/config"
)

// TestReview3UpgradeAnswerHeadIsCorralsOwn (found in review: the answer to
// an upgrade request skipped ownHead): the answer to a request that asks
// for an upgrade is judged like any other. An HTTP/1.0 worker's 200 reaches
// an HTTP/1.1 client as HTTP/1.1 (not "HTTP/1.0" with a chunked body), and
// a header name with a space inside is a 502, on a relayed answer as on a
// 101, never forwarded.
func TestReview3UpgradeAnswerHeadIsCorralsOwn(t *testing.T) {
	const ask = "GET /ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	cases := []struct{ name, answer, want, body string }{
		{"HTTP/1.0 200 until close", "HTTP/1.0 200 OK\r\n\r\nbody", "HTTP/1.1 200 OK", "body"},
		{"name with a space on a 200", "HTTP/1.1 200 OK\r\nX Y: z\r\nContent-Length: 2\r\n\r\nok", "HTTP/1.1 502 ", ""},
		{"name with a space on a 101", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX Y: z\r\n\r\n", "HTTP/1.1 502 ", ""},
	}
	forEngine(t, true, func(t *testing.T, e engine) {
		for _, c := range cases {
			f := frontAnswering(t, e, c.answer, false)
			out := f.rawExchange(t, ask)
			if !strings.HasPrefix(out, c.want) || strings.Contains(out, "X Y") {
				t.Errorf("%s: client got %q, want %q", c.name, out, c.want)
				continue
			}
			if c.body == "" {
				continue
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), nil)
			if err != nil {
				t.Errorf("%s: client got %q: %v", c.name, out, err)
				continue
			}
			if b, _ := io.ReadAll(resp.Body); string(b) != c.body {
				t.Errorf("%s: client read body %q, want %q", c.name, b, c.body)
			}
		}
	})
}

// TestReview3RequestNameBytes pins what the engine and nameWithSpace do
// with the bytes of a client's field name: a tab or another control byte
// inside it, or a space before the colon, is a 400 and reaches no worker;
// an obs-fold continuation line (which has no name) is not refused.
func TestReview3RequestNameBytes(t *testing.T) {
	rec := newRecorder(t, nil)
	f := startFront(t, engines[0], testSettings(), oneApp(nil, rec.addr))
	for _, name := range []string{"X\tY", "X\x01Y", "X\x7fY", "X-Y ", "X-Y\t", "X Y"} {
		raw := "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + name + ": 1\r\n\r\n"
		if out := f.rawExchange(t, raw); !strings.HasPrefix(out, "HTTP/1.1 400 ") {
			t.Errorf("name %q answered %q, want 400", name, out)
		}
	}
	if got := rec.requests(); len(got) > 0 {
		t.Fatalf("worker received %q %q", got[0].line, got[0].headers)
	}
	out := f.rawExchange(t, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-A: 1\r\n  b c: d\r\n\tx y\r\n\r\n")
	if !strings.HasPrefix(out, "HTTP/1.1 200 ") {
		t.Fatalf("folded header answered %q, want 200", out)
	}
}

// TestReview3WorkerNameWithSpaceOnEveryEngine (found in review: the HTTP/2
// engine's transport keeps such names, as net/http does since go.dev/issue/34540):
// a worker's header name with a space inside is a 502 on every engine, as
// ownHead makes it on fasthttp; a space before the colon is removed (RFC
// 9112 5.1: a proxy must remove it from a response before forwarding). One
// named engine difference: "Content-Length :" frames the body on fasthttp,
// which normalizes the name while parsing; net/http's transport has already
// read the body without it (until the worker closes), so there it is a 502.
func TestReview3WorkerNameWithSpaceOnEveryEngine(t *testing.T) {
	cases := []struct {
		name, answer string
		want, wantH2 int
	}{
		{"space inside", "HTTP/1.1 200 OK\r\nX Y: z\r\nContent-Length: 2\r\n\r\nok", 502, 502},
		{"space before the colon", "HTTP/1.1 200 OK\r\nX-A : 1\r\nContent-Length: 2\r\n\r\nok", 200, 200},
		{"framing name with a space before the colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", 200, 502},
	}
	forEngine(t, false, func(t *testing.T, e engine) {
		for _, c := range cases {
			f := frontAnswering(t, e, c.answer, true)
			resp, body, err := f.do(t, "GET", "/", nil)
			want := c.want
			if !e.h1 {
				want = c.wantH2
			}
			if err != nil || resp.StatusCode != want {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Errorf("%s: status %d body %q err %v, want %d", c.name, status, body, err, want)
				continue
			}
			for k := range resp.Header {
				if strings.Contains(k, " ") {
					t.Errorf("%s: the client got header %q", c.name, k)
				}
			}
			if want == 200 && (string(body) != "ok" || (c.name == "space before the colon" && resp.Header.Get("X-A") != "1")) {
				t.Errorf("%s: body %q X-A %q, want \"ok\" and \"1\"", c.name, body, resp.Header.Get("X-A"))
			}
		}
	})
}

// TestReview3UpgradeAnswerHeadBound (found in review: the upgrade path read
// the answer through a 4 KiB reader): the answer to an upgrade request has
// the same head bound as any other, maxResponseHead: under it relayed,
// over it a 502.
func TestReview3UpgradeAnswerHeadBound(t *testing.T) {
	big, over := strings.Repeat("b", maxResponseHead-2048), strings.Repeat("o", maxResponseHead+1024)
	forEngine(t, true, func(t *testing.T, e engine) {
		for _, c := range []struct{ answer, want string }{
			{"HTTP/1.1 426 Upgrade Required\r\nX-Big: " + big + "\r\nContent-Length: 4\r\n\r\nnope", "HTTP/1.1 426 "},
			{"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Big: " + big + "\r\n\r\n", "HTTP/1.1 101 "},
			{"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nX-Big: " + over + "\r\n\r\n", "HTTP/1.1 502 "},
		} {
			f := frontAnswering(t, e, c.answer, false)
			out := f.rawExchange(t, "GET /ws HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			if !strings.HasPrefix(out, c.want) || strings.Contains(out, over) || c.want != "HTTP/1.1 502 " && !strings.Contains(out, big) {
				t.Errorf("worker answered %.40q (%d bytes); client got %.80q, want %q", c.answer, len(c.answer), out, c.want)
			}
		}
	})
}

// frontAnswering serves e in front of one worker that answers every
// request with answer (and then closes the connection unless keep), with
// retries off.
func frontAnswering(t *testing.T, e engine, answer string, keep bool) *front {
	rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
		_, _ = w.WriteString(answer)
		_ = w.Flush()
		return keep
	})
	return startFront(t, e, testSettings(), oneApp(func(a *config.App) { a.Retries = 0 }, rec.addr))
}

// TestReview3AnswersNotRefused pins answers the new head checks must let
// through on every engine: an HTTP/1.0 worker keeping its connection
// alive, and interim 1xx answers before the final one (consumed, never
// taken for the final status).
func TestReview3AnswersNotRefused(t *testing.T) {
	cases := []struct{ name, answer string }{
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"},
		{"103 then 200", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{"100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	}
	forEngine(t, false, func(t *testing.T, e engine) {
		for _, c := range cases {
			f := frontAnswering(t, e, c.answer, true)
			for i := range 2 { // the second on the kept connection
				resp, body, err := f.do(t, "GET", "/", nil)
				if err != nil || resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("Connection") != "" {
					t.Errorf("%s, request %d: %v %q err %v", c.name, i, resp, body, err)
				}
			}
		}
	})
}
