//go:build linux

package proxy

import (
	"testing"
	"time"
)

func TestParkedConnsWaitInThePoller(t *testing.T) {
	p, addr := startEchoFront(t, testSettings())
	var clients []*rawClient
	for i := range 3 {
		rc := dialRaw(t, addr)
		rc.send("/" + itoa(i))
		rc.expect("/" + itoa(i))
		clients = append(clients, rc)
	}
	waitParked(t, p, 3)
	polled := func() int {
		pl := p.poll.Load()
		if pl == nil {
			return 0
		}
		pl.mu.Lock()
		defer pl.mu.Unlock()
		return len(pl.conns)
	}
	waitFor(t, "3 connections in the poller", 5*time.Second, func() bool { return polled() == 3 })
	// Each wakes from the poller and serves its next request.
	for i, rc := range clients {
		rc.send("/again-" + itoa(i))
		rc.expect("/again-" + itoa(i))
	}
	waitParked(t, p, 3)
	waitFor(t, "3 connections in the poller again", 5*time.Second, func() bool { return polled() == 3 })
}

// The goroutine wait (other Unix systems, or no epoll) parks, resumes and
// times out like the poller.
func TestParkedConnsGoroutineFallback(t *testing.T) {
	s := testSettings()
	s.IdleTimeout = 1500 * time.Millisecond
	p := newTestProxy(t, s)
	p.pollOnce.Do(func() {}) // no poller: every park waits in a goroutine
	setApps(p, newFixture(p, testApp("web"), pathEcho(t)))
	addr := serveOn(t, p, p.Serve)
	rc := dialRaw(t, addr)
	for _, path := range []string{"/one", "/two"} {
		rc.send(path)
		rc.expect(path)
		waitParked(t, p, 1)
	}
	rc.send("/a", "/b")
	rc.expect("/a")
	rc.expect("/b")
	waitParked(t, p, 1)
	// A request that arrives before the wait begins is seen.
	sendAroundPark(t, rc, 120)
	waitParked(t, p, 1)
	if p.poll.Load() != nil {
		t.Fatal("a poller started")
	}
	rc.expectClosed(5 * time.Second)
	waitFor(t, "no open connection", 5*time.Second, func() bool { return p.ConnStats().Open == 0 })
}
