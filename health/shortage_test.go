package health

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-dev/corral/config"
)

// exhaustDescriptors lowers this process's descriptor limit to what it
// has open and fills every free number below it, so the next socket fails
// with EMFILE; the returned function undoes both.
func exhaustDescriptors(t *testing.T) (restore func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(len(ents) + 8)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []*os.File
	restore = func() {
		for _, f := range fillers {
			f.Close()
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
			t.Fatal(err)
		}
	}
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			return restore
		}
		if err != nil || len(fillers) > 1000 {
			restore()
			t.Fatalf("filling the descriptor table: %v (%d open)", err, len(fillers))
		}
		fillers = append(fillers, f)
	}
}

// TestProbeOutOfDescriptorsCountsForNothing: a TCP probe (a new connection
// every time) that cannot get a socket because corral is out of file
// descriptors is corral's shortage, not the worker's failure: even at an
// unhealthy threshold of 1 the worker stays healthy, the failure counters
// do not move, and the next probe with descriptors passes.
func TestProbeOutOfDescriptorsCountsForNothing(t *testing.T) {
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	spec := &config.Health{Type: TypeTCP, Interval: httpSpec(1, 1).Interval, Timeout: httpSpec(1, 1).Timeout,
		HealthyThreshold: 1, UnhealthyThreshold: 1}
	p := newTestProbe(t, spec, srv.addr(), rec)
	step(t, p, true)
	if tr := rec.next(t); !tr.Healthy {
		t.Fatalf("first pass: %+v", tr)
	}

	restore := exhaustDescriptors(t)
	err := p.Step(t.Context())
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
