package proxy

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// TestWorkerResponseHeadBounds: every engine judges a worker's response
// head alike: a status outside 100..599 is a 502 (not relayed), and so is
// a head past maxResponseHead, while one under it is relayed.
func TestWorkerResponseHeadBounds(t *testing.T) {
	withHeader := func(n int) string {
		return "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("b", n) + "\r\nContent-Length: 2\r\n\r\nok"
	}
	cases := []struct {
		name, head string
		want       int
	}{
		{"status 999", "HTTP/1.1 999 xx\r\nContent-Length: 2\r\n\r\nok", 502},
		{"status 099", "HTTP/1.1 099 xx\r\nContent-Length: 2\r\n\r\nok", 502},
		{"status 599", "HTTP/1.1 599 xx\r\nContent-Length: 2\r\n\r\nok", 599},
		{"head under the bound", withHeader(maxResponseHead - 1024), 200},
		{"head over the bound", withHeader(maxResponseHead + 1024), 502},
	}
	forEngine(t, false, func(t *testing.T, e engine) {
		for _, c := range cases {
			rec := newRecorder(t, func(_ *recorded, _ net.Conn, w *bufio.Writer) bool {
				_, _ = w.WriteString(c.head)
				return false
			})
			f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
			resp, body, err := f.do(t, "GET", "/", nil)
			if err != nil || resp.StatusCode != c.want {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Errorf("%s: status %d body %.40q err %v, want %d", c.name, status, body, err, c.want)
			}
		}
	})
}
