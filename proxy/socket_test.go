package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/config"
)

// TestSocketWorkerReceivesWhatATCPWorkerDoes sends one request through each
// engine to a recording worker on TCP, then to one on a Unix socket (the
// same app, its table swapped): the socket worker must receive the same
// request line, header lines in the same order, and body bytes.
func TestSocketWorkerReceivesWhatATCPWorkerDoes(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB
	forEngine(t, false, func(t *testing.T, e engine) {
		tcp := newRecorder(t, okAnswer)
		sock := startRecorder(t, &recorder{socket: true})
		var fix *appFixture
		s := testSettings()
		s.RequestID = false // a random id per request would differ
		f := startFront(t, e, s, func(p *Proxy) []*appFixture {
			fix = newFixture(p, testApp("web"), tcp.addr)
			return []*appFixture{fix}
		})
		send := func() {
			t.Helper()
			resp, got, err := f.do(t, "POST", "/upload?x=1", body, "Host", "app.test", "X-One", "1", "X-Two", "2", "Content-Type", "application/octet-stream")
			if err != nil || resp.StatusCode != 200 || string(got) != "ok" {
				t.Fatalf("POST: %v %v %q", resp, err, got)
			}
		}
		send()
		fix.set(f.proxy, sock.addr)
		send()
		a, b := last(t, tcp), last(t, sock)
		if len(sock.requests()) != 1 {
			t.Fatalf("socket worker got %d requests, want 1", len(sock.requests()))
		}
		if a.line != b.line || !slices.Equal(untimed(a.headers), untimed(b.headers)) {
			t.Errorf("over TCP the worker got\n%s\n%s\nover the socket\n%s\n%s", a.line, strings.Join(a.headers, "\n"), b.line, strings.Join(b.headers, "\n"))
		}
		if !b.complete || b.bodyLen != len(body) || b.bodySum != a.bodySum || a.bodyLen != len(body) {
			t.Errorf("bodies: tcp %d %s, socket %d %s complete %v; sent %d", a.bodyLen, a.bodySum, b.bodyLen, b.bodySum, b.complete, len(body))
		}
		if len(b.header("Host")) != 1 || b.header("Host")[0] != "app.test" {
			t.Errorf("socket worker's Host lines %q, want [app.test]", b.header("Host"))
		}
	})
}

// untimed returns header lines with the value of X-Request-Start (the
// time the request arrived) blanked.
func untimed(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		if k, _, _ := strings.Cut(l, ":"); strings.EqualFold(k, "X-Request-Start") {
			l = k + ": (time)"
		}
		out[i] = l
	}
	return out
}

// TestSocketWorkerHostWhenClientSentNone: an HTTP/1.0 request without a
// Host reaches a socket worker with Host localhost, as a socket names no
// host (a TCP worker gets its address).
func TestSocketWorkerHostWhenClientSentNone(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		sock := startRecorder(t, &recorder{socket: true})
		f := startFront(t, e, testSettings(), oneApp(nil, sock.addr))
		out := f.rawExchange(t, "GET /old HTTP/1.0\r\n\r\n")
		if !strings.HasPrefix(out, "HTTP/1.") || !strings.Contains(out, " 200 ") {
			t.Fatalf("answer %q", out)
		}
		r := last(t, sock)
		if r.line != "GET /old HTTP/1.1" && r.line != "GET /old HTTP/1.0" {
			t.Errorf("request line %q", r.line)
		}
		if h := r.header("Host"); len(h) != 1 || h[0] != "localhost" {
			t.Errorf("Host lines %q, want [localhost]", h)
		}
	})
}

// TestSocketWorkerUpgradeTunnel: an upgrade to a socket worker dials the
// socket, and the tunnel carries bytes both ways.
func TestSocketWorkerUpgradeTunnel(t *testing.T) {
	forEngine(t, true, func(t *testing.T, e engine) {
		sock := startRecorder(t, &recorder{socket: true, answer: echoUpgrade})
		f := startFront(t, e, testSettings(), oneApp(nil, sock.addr))
		c := f.dial(t)
		if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		const ping = "ping through the socket tunnel"
		if _, err := io.WriteString(c, ping); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(ping))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != ping {
			t.Fatalf("tunnel echo %q %v", got, err)
		}
	})
}

// TestSocketWorkerGoneIsADialError: a socket worker whose socket file is
// gone fails at the dial, so the request is retried on the other worker
// and passive health blames the gone one.
func TestSocketWorkerGoneIsADialError(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		live := startRecorder(t, &recorder{socket: true})
		gone := shortTempDir(t) + "/gone.sock"
		var fix *appFixture
		f := startFront(t, e, testSettings(), func(p *Proxy) []*appFixture {
			a := testApp("web")
			a.Balance = config.BalanceRoundRobin
			a.Passive = config.Passive{Failures: 1}
			fix = newFixture(p, a, gone, live.addr)
			return []*appFixture{fix}
		})
		for i := range 4 {
			resp, got, err := f.do(t, "GET", "/", nil, "Host", "app.test")
			if err != nil || resp.StatusCode != 200 || string(got) != "ok" {
				t.Fatalf("request %d: %v %v %q", i, resp, err, got)
			}
		}
		if n := len(live.requests()); n != 4 {
			t.Errorf("live worker got %d requests, want 4", n)
		}
		if g := fix.backends()[0]; g.ConsecutiveFailures.Load() == 0 && g.Ejections.Load() == 0 {
			t.Error("the gone socket worker was not blamed")
		}
	})
}
