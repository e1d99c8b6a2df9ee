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
		if p.poll == nil {
			return 0
		}
		p.poll.mu.Lock()
		defer p.poll.mu.Unlock()
		return len(p.poll.conns)
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
