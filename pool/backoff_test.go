package pool

import (
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/config"
)

// TestKillLoopKeepsCapacity SIGKILLs a random worker that has been serving
// for a while, again and again: workers that served come back at once, so
// the table is never empty for long (issue 10, item 0).
func TestKillLoopKeepsCapacity(t *testing.T) {
	spec := testSpec(t, "ok", 4)
	spec.Backoff.Min = 200 * time.Millisecond
	spec.Backoff.Max = 5 * time.Second
	spec.Backoff.ResetAfter = 30 * time.Second
	spec.Backoff.MinUptime = 100 * time.Millisecond
	spec.Backoff.QuickRestarts = 100
	a := startApp(t, spec)
	waitReady(t, a, 4)

	// Sample the table: the longest stretch without a backend is the outage.
	var longest atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var emptySince time.Time
		for {
			now := time.Now()
			if len(a.Table().Backends) == 0 {
				if emptySince.IsZero() {
					emptySince = now
				}
				if d := now.Sub(emptySince); int64(d) > longest.Load() {
					longest.Store(int64(d))
				}
			} else {
				emptySince = time.Time{}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	kills := 0
	end := time.Now().Add(8 * time.Second)
	for time.Now().Before(end) && kills < 60 {
		var served []int
		for _, w := range a.Status().Workers {
			if w.State == StateReady && time.Since(w.ReadyAt) >= 150*time.Millisecond {
				served = append(served, w.PID)
			}
		}
		if len(served) > 0 {
			if err := unix.Kill(served[rand.IntN(len(served))], syscall.SIGKILL); err == nil {
				kills++
			}
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-t.Context().Done():
		}
	}
	close(stop)
	<-sampled
	t.Logf("%d kills; longest time without a ready worker %v", kills, time.Duration(longest.Load()))
	if kills < 20 {
		t.Fatalf("only %d kills in the loop", kills)
	}
	if d := time.Duration(longest.Load()); d > time.Second {
		t.Errorf("the app had no ready worker for %v under the kill loop", d)
	}
	waitReady(t, a, 4)
}

// killReady SIGKILLs slot id's worker once it is ready and has been in
// rotation for at least up, and returns its pid.
func killReady(t *testing.T, a *App, id string, up time.Duration) int {
	t.Helper()
	var pid int
	eventually(t, 15*time.Second, id+" ready", func() bool {
		for _, w := range a.Status().Workers {
			if w.ID == id && w.State == StateReady && time.Since(w.ReadyAt) >= up {
				pid = w.PID
				return true
			}
		}
		return false
	})
	if err := unix.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestQuickRestartsBounded: a worker that served comes back at once, but
// only quick_restarts times a minute; then the backoff delay applies.
func TestQuickRestartsBounded(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	spec.Backoff = config.Backoff{Min: 3 * time.Second, Max: 10 * time.Second, ResetAfter: time.Minute,
		MinUptime: 50 * time.Millisecond, QuickRestarts: 2}
	a := startApp(t, spec)
	waitReady(t, a, 2)
	for i := range 2 {
		killed := time.Now()
		pid := killReady(t, a, "web-1", 100*time.Millisecond)
		eventually(t, 10*time.Second, "web-1 back", func() bool {
			p, ok := readyPIDs(a, 2)
			return ok && p["web-1"] != pid
		})
		// backoff.min is 3s: back well before it means a restart at once.
		if took := time.Since(killed); took > 2*time.Second {
			t.Errorf("quick restart %d took %v", i+1, took)
		}
	}
	killReady(t, a, "web-1", 100*time.Millisecond)
	eventually(t, 5*time.Second, "web-1 in backoff after the quick restarts", func() bool {
		for _, w := range a.Status().Workers {
			if w.ID == "web-1" && w.State == StateBackoff {
				return true
			}
		}
		return false
	})
	if got := len(a.Table().Backends); got != 1 {
		t.Errorf("%d backends while web-1 backs off, want web-2 alone", got)
	}
}

// TestLastReadyWorkerNotLeftInBackoff: an app whose only worker crashes
// after serving, over and over, restarts it within backoff.min although the
// slot's delay has grown: the app is never left with no worker for long.
func TestLastReadyWorkerNotLeftInBackoff(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.Backoff = config.Backoff{Min: 100 * time.Millisecond, Max: 20 * time.Second, ResetAfter: time.Minute}
	a := startApp(t, spec)
	waitReady(t, a, 1)
	var slowest time.Duration
	for range 8 {
		pid := killReady(t, a, "web-1", 0)
		killed := time.Now()
		eventually(t, 30*time.Second, "web-1 back", func() bool {
			p, ok := readyPIDs(a, 1)
			return ok && p["web-1"] != pid
		})
		slowest = max(slowest, time.Since(killed))
	}
	t.Logf("slowest way back after a crash: %v", slowest)
	// Without the rule the eighth delay is 12.8s.
	if slowest > 3*time.Second {
		t.Errorf("the app's only worker took %v to come back", slowest)
	}
}
