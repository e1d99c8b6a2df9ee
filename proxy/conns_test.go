package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// pathEcho is a worker answering each request with its method and path.
func pathEcho(t *testing.T) string {
	s := backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Method+" "+r.URL.Path)
	})
	return addrOf(s)
}

// rawClient is one client connection that writes requests by hand and
// reads the answers in order.
type rawClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (rc *rawClient) send(paths ...string) {
	rc.t.Helper()
	var b strings.Builder
	for _, p := range paths {
		b.WriteString("GET " + p + " HTTP/1.1\r\nHost: app.test\r\n\r\n")
	}
	if _, err := io.WriteString(rc.c, b.String()); err != nil {
		rc.t.Fatal(err)
	}
}

// expect reads one response and checks it is the echo of path.
func (rc *rawClient) expect(path string) {
	rc.t.Helper()
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		rc.t.Fatalf("reading the answer to %s: %v", path, err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "GET "+path {
		rc.t.Fatalf("answer to %s: %d %q (%v)", path, resp.StatusCode, body, err)
	}
}

// expectClosed waits for the proxy to close the connection.
func (rc *rawClient) expectClosed(within time.Duration) {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(within))
	n, err := rc.br.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) {
		rc.t.Fatalf("connection not closed by the proxy within %v: n=%d err=%v", within, n, err)
	}
}

func startEchoFront(t *testing.T, s config.Proxy) (*Proxy, string) {
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), pathEcho(t)))
	return p, serveOn(t, p, p.Serve)
}

func waitParked(t *testing.T, p *Proxy, n int) {
	t.Helper()
	waitFor(t, "parked connections", 5*time.Second, func() bool { return p.ConnStats().Parked == n })
}

func TestIdleConnParksAndResumes(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		name := "plain"
		if h2c {
			name = "h2c-listener"
		}
		t.Run(name, func(t *testing.T) {
			s := testSettings()
			s.H2C = h2c
			p, addr := startEchoFront(t, s)
			rc := dialRaw(t, addr)
			for i, path := range []string{"/one", "/two", "/three"} {
				rc.send(path)
				rc.expect(path)
				// Between requests the connection waits parked: no engine
				// buffers, no engine goroutine.
				waitParked(t, p, 1)
				if got := p.ConnStats().Open; got != 1 {
					t.Fatalf("after request %d: %d open connections, want 1", i+1, got)
				}
			}
			// A request that does not parse after a resume is answered 400,
			// also on the h2c listener (only a connection's very first
			// request may be a broken HTTP/2 preface, answered by a close).
			if _, err := io.WriteString(rc.c, "BROKEN\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(rc.br, nil)
			if err != nil {
				t.Fatalf("bad request after a resume: %v", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Fatalf("bad request after a resume: %d, want 400", resp.StatusCode)
			}
		})
	}
}

func TestPipelinedRequestsSurviveParking(t *testing.T) {
	p, addr := startEchoFront(t, testSettings())
	rc := dialRaw(t, addr)
	for range 3 {
		paths := []string{"/a", "/b", "/c", "/d"}
		rc.send(paths...)
		for _, path := range paths {
			rc.expect(path)
		}
		waitParked(t, p, 1)
	}
	// A request split across writes: the second half arrives while the
	// first half is in the engine's buffer, never lost to parking.
	if _, err := io.WriteString(rc.c, "GET /split HTTP/1.1\r\nHo"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // lets the engine read the first half alone
	if _, err := io.WriteString(rc.c, "st: app.test\r\n\r\nGET /after HTTP/1.1\r\nHost: app.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	rc.expect("/split")
	rc.expect("/after")
}

func TestParkedConnIdleTimeout(t *testing.T) {
	s := testSettings()
	s.IdleTimeout = 300 * time.Millisecond
	p, addr := startEchoFront(t, s)
	rc := dialRaw(t, addr)
	rc.send("/x")
	rc.expect("/x")
	waitParked(t, p, 1)
	start := time.Now()
	rc.expectClosed(5 * time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("parked connection closed after %v, idle_timeout is 300ms", d)
	}
	waitFor(t, "no open connection", 5*time.Second, func() bool { return p.ConnStats().Open == 0 })
}

func TestShutdownClosesParkedConns(t *testing.T) {
	s := testSettings()
	s.IdleTimeout = time.Minute
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), pathEcho(t)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	var clients []*rawClient
	for i := range 3 {
		rc := dialRaw(t, ln.Addr().String())
		rc.send("/" + itoa(i))
		rc.expect("/" + itoa(i))
		clients = append(clients, rc)
	}
	waitParked(t, p, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown waited %v for idle connections", d)
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	for _, rc := range clients {
		rc.expectClosed(2 * time.Second)
	}
	if got := p.ConnStats().Open; got != 0 {
		t.Fatalf("%d connections open after shutdown", got)
	}
}

func TestParkedConnAcrossListenerGenerations(t *testing.T) {
	s := testSettings()
	p, addr := startEchoFront(t, s)
	rc := dialRaw(t, addr)
	rc.send("/old")
	rc.expect("/old")
	waitParked(t, p, 1)
	// A listener-level change starts a new engine server; the parked
	// connection keeps the one that accepted it and goes on serving.
	next := s
	next.MaxHeaderBytes = 4 << 10
	p.SetSettings(next)
	fresh := dialRaw(t, addr)
	fresh.send("/new")
	fresh.expect("/new")
	rc.send("/old-again")
	rc.expect("/old-again")
	waitParked(t, p, 2)
}

func TestUpgradeAfterPark(t *testing.T) {
	rec := newRecorder(t, echoUpgrade)
	p := newTestProxy(t, testSettings())
	setApps(p, newFixture(p, testApp("web"), rec.addr))
	addr := serveOn(t, p, p.Serve)
	rc := dialRaw(t, addr)
	if _, err := io.WriteString(rc.c, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	waitParked(t, p, 1)
	if _, err := io.WriteString(rc.c, "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(rc.br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade after a resume: %v %v", resp, err)
	}
	if _, err := io.WriteString(rc.c, "ping through the tunnel"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len("ping through the tunnel"))
	if _, err := io.ReadFull(rc.br, got); err != nil || string(got) != "ping through the tunnel" {
		t.Fatalf("tunnel echo: %q %v", got, err)
	}
	// The tunnel is a hijacked connection: still open, never parked.
	if st := p.ConnStats(); st.Open != 1 || st.Parked != 0 {
		t.Fatalf("during the tunnel: %+v", st)
	}
}

func TestMaxConnectionsWaitsInBacklog(t *testing.T) {
	s := testSettings()
	s.MaxConnections = 2
	p, addr := startEchoFront(t, s)
	a := dialRaw(t, addr)
	a.send("/a")
	a.expect("/a")
	b := dialRaw(t, addr)
	b.send("/b")
	b.expect("/b")
	// The third connection completes its handshake in the kernel's
	// backlog but is not accepted: its request waits.
	c := dialRaw(t, addr)
	c.send("/c")
	_ = c.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := c.br.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
		t.Fatalf("connection past the cap was served or closed: n=%d err=%v", n, err)
	}
	st := p.ConnStats()
	if st.Open != 2 || st.Limit != 2 || st.LimitWaits == 0 {
		t.Fatalf("at the cap: %+v", st)
	}
	// One closes: the waiting one is accepted and served.
	_ = a.c.Close()
	_ = c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.expect("/c")
	b.send("/b2")
	b.expect("/b2")

	// A reload raising the cap applies to the next accept.
	next := s
	next.MaxConnections = 3
	p.SetSettings(next)
	d := dialRaw(t, addr)
	d.send("/d")
	d.expect("/d")
	if got := p.ConnStats().Open; got != 3 {
		t.Fatalf("after raising the cap: %d open, want 3", got)
	}
}

func TestMaxConnectionsDefaultFollowsFileLimit(t *testing.T) {
	p := newTestProxy(t, testSettings())
	lim := p.ConnStats().Limit
	if lim <= 0 {
		t.Fatalf("default connection cap %d, want one derived from the file limit", lim)
	}
	if n, ok := fileLimit(); ok && uint64(lim) >= n {
		t.Fatalf("default connection cap %d leaves no descriptor for workers (limit %d)", lim, n)
	}
}

// A request sent about when the connection parks races the park: it may
// arrive before the wait for it begins, and must never be missed.
func TestBackToBackRequestsRaceThePark(t *testing.T) {
	p, addr := startEchoFront(t, testSettings())
	sendAroundPark(t, dialRaw(t, addr), 120)
	waitParked(t, p, 1)
}

// sendAroundPark makes n requests on rc, each sent after a pause spread
// around parkAfter (the pause makes the race, it waits for nothing).
func sendAroundPark(t *testing.T, rc *rawClient, n int) {
	t.Helper()
	for i := range n {
		time.Sleep(parkAfter - time.Millisecond + time.Duration(i%9)*250*time.Microsecond)
		_ = rc.c.SetDeadline(time.Now().Add(time.Second)) // well below the idle timeout
		path := "/n" + itoa(i)
		rc.send(path)
		rc.expect(path)
	}
}
