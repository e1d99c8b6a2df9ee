package health

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/internal/fdtest"
)

// TestProbeOutOfDescriptorsCountsForNothing: a TCP probe (a new connection
// every time) that cannot get a socket because corral is out of file
// descriptors is corral's shortage, not the worker's failure: even at an
// unhealthy threshold of 1 the worker stays healthy, the failure counters
// do not move, and the next probe with descriptors passes.
func TestProbeOutOfDescriptorsCountsForNothing(t *testing.T) {
	// A listener that never accepts: a TCP probe connects through the
	// backlog, and no server side opens or closes descriptors meanwhile.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rec := newRecorder()
	spec := &config.Health{Type: TypeTCP, Interval: httpSpec(1, 1).Interval, Timeout: httpSpec(1, 1).Timeout,
		HealthyThreshold: 1, UnhealthyThreshold: 1}
	p := newTestProbe(t, spec, ln.Addr().String(), rec)
	step(t, p, true)
	if tr := rec.next(t); !tr.Healthy {
		t.Fatalf("first pass: %+v", tr)
	}

	restore := fdtest.Exhaust(t)
	err = p.Step(t.Context())
	restore()
	if err == nil || !errors.Is(err, syscall.EMFILE) || !strings.Contains(err.Error(), "out of file descriptors") {
		t.Fatalf("Step out of descriptors: %v, want an EMFILE error that says corral is out of file descriptors", err)
	}
	rec.none(t)
	if s := p.Stats(); !s.Healthy || s.ConsecutiveFailures != 0 || s.TotalFailures != 0 {
		t.Fatalf("after a probe corral could not make: %+v, want healthy with no failure counted", s)
	}
	step(t, p, true)
}
