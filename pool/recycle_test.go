package pool

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// watchCapacity samples the routing table every millisecond until stop is
// closed and sends the fewest backends it saw.
func watchCapacity(a *App, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	go func() {
		low := len(a.Table().Backends)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if n := len(a.Table().Backends); n < low {
				low = n
			}
			select {
			case <-stop:
				out <- low
				return
			case <-tick.C:
			}
		}
	}()
	return out
}

// TestMaxRequestsRecyclesOneAtATimeWithoutLosingCapacity simulates the
// proxy's request counting on two workers with max_requests = 20: each is
// recycled, never two at once, and the table never has fewer than 2
// backends.
func TestMaxRequestsRecyclesOneAtATimeWithoutLosingCapacity(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	spec.Recycle = config.Recycle{MaxRequests: 20, Interval: 20 * time.Millisecond}
	a := startApp(t, spec)
	first := waitReady(t, a, 2)
	stop := make(chan struct{})
	low := watchCapacity(a, stop)
	maxReplacing := 0
	deadline := time.Now().Add(20 * time.Second)
	pace := time.NewTicker(2 * time.Millisecond) // the simulated load's rate
	defer pace.Stop()
	for time.Now().Before(deadline) {
		st := a.Status()
		done := map[string]bool{}
		for _, w := range st.Workers {
			if w.Replacements[CauseRecycle] >= 2 {
				done[w.ID] = true
			}
		}
		if len(done) == 2 {
			break
		}
		// Workers of a slot beyond the one in its place: replacements running.
		perSlot := map[string]int{}
		for _, w := range st.Workers {
			perSlot[w.ID]++
		}
		replacing := 0
		for _, n := range perSlot {
			replacing += n - 1
		}
		maxReplacing = max(maxReplacing, replacing)
		for _, b := range a.Table().Backends {
			b.Stats.Observe(200, time.Millisecond)
		}
		<-pace.C
	}
	close(stop)
	if l := <-low; l < 2 {
		t.Errorf("routing table fell to %d backends while recycling, want 2", l)
	}
	if maxReplacing > 1 {
		t.Errorf("%d workers were replaced at once, want at most 1", maxReplacing)
	}
	last := waitReady(t, a, 2)
	for id, pid := range first {
		if last[id] == pid {
			t.Errorf("%s was never recycled", id)
		}
	}
	for _, w := range a.Status().Workers {
		if w.Replacements[CauseRecycle] < 2 || w.Replacements[CauseCrash] != 0 {
			t.Errorf("%s: restarts by cause %v, want >= 2 recycle and no crash", w.ID, w.Replacements)
		}
	}
}

// TestMaxMemoryRecyclesTheGrownWorker makes one of two workers allocate
// 64 MiB past max_memory: that one is replaced, the other is not, and the
// table never loses a backend.
func TestMaxMemoryRecyclesTheGrownWorker(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	spec.Recycle = config.Recycle{MaxMemory: 48 << 20, Interval: 50 * time.Millisecond}
	a := startApp(t, spec)
	before := waitReady(t, a, 2)
	stop := make(chan struct{})
	low := watchCapacity(a, stop)
	var port int
	for _, w := range a.Status().Workers {
		if w.ID == "web-2" {
			port = w.Port
		}
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/grow")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	eventually(t, 15*time.Second, "web-2 recycled", func() bool {
		p, ok := readyPIDs(a, 2)
		return ok && p["web-2"] != before["web-2"]
	})
	close(stop)
	if l := <-low; l < 2 {
		t.Errorf("routing table fell to %d backends while recycling, want 2", l)
	}
	after := waitReady(t, a, 2)
	if after["web-1"] != before["web-1"] {
		t.Errorf("web-1 was recycled too")
	}
	for _, w := range a.Status().Workers {
		want := map[string]uint64{"web-1": 0, "web-2": 1}[w.ID]
		if w.Replacements[CauseRecycle] != want {
			t.Errorf("%s: restarts by cause %v, want %d recycle", w.ID, w.Replacements, want)
		}
	}
}

// TestMaxAgeRecycles checks that a worker older than max_age is replaced,
// and that groupRSS finds the memory of a live worker's group.
func TestMaxAgeRecycles(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.Recycle = config.Recycle{MaxAge: 500 * time.Millisecond, Interval: 50 * time.Millisecond}
	a := startApp(t, spec)
	pid := waitReady(t, a, 1)["web-1"]
	if rss := groupRSS(map[int]bool{pid: true})[pid]; rss < 1<<20 {
		t.Errorf("groupRSS of the worker's group = %d bytes, want at least 1 MiB", rss)
	}
	eventually(t, 10*time.Second, "web-1 recycled for its age", func() bool {
		p, ok := readyPIDs(a, 1)
		return ok && p["web-1"] != pid && a.Status().Workers[0].Replacements[CauseRecycle] >= 1
	})
}

// TestJitteredStaysWithinTenPercent pins the jitter range.
func TestJitteredStaysWithinTenPercent(t *testing.T) {
	seen := map[int64]bool{}
	for range 2000 {
		v := jittered(100)
		if v < 100 || v > 110 {
			t.Fatalf("jittered(100) = %d, want 100..110", v)
		}
		seen[v] = true
	}
	if len(seen) < 5 {
		t.Errorf("jittered(100) drew only %d values", len(seen))
	}
	if jittered(0) != 0 {
		t.Error("jittered(0) != 0")
	}
}
