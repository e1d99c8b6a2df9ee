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
			rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
				_, _ = w.WriteString(c.answer)
				return false
			})
			f := startFront(t, e, testSettings(), oneApp(func(a *config.App) { a.Retries = 0 }, rec.addr))
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
