package pool

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
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

// backoffDelays returns the delays logged for worker id's backoffs so far.
func backoffDelays(t *testing.T, out *syncBuffer, id string) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for _, line := range strings.Split(out.String(), "\n") {
		if !strings.Contains(line, "worker in backoff:") || !strings.Contains(line, "worker="+id+" ") {
			continue
		}
		_, v, ok := strings.Cut(line, " delay=")
		if !ok {
			t.Fatalf("no delay in %q", line)
		}
		d, err := time.ParseDuration(strings.Fields(v)[0])
		if err != nil {
			t.Fatalf("delay in %q: %v", line, err)
		}
		ds = append(ds, d)
	}
	return ds
}

func withLogTo(out *syncBuffer) func(*Options) {
	return func(o *Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Info})
	}
}

// TestBackoffJitterWithinMax: the jitter never takes a delay past
// backoff.max (issue 10, item 6).
func TestBackoffJitterWithinMax(t *testing.T) {
	spec := testSpec(t, "exit", 1)
	spec.Command = []string{"/bin/sh", "-c", "exit 1"}
	spec.Backoff = config.Backoff{Min: 10 * time.Millisecond, Max: 40 * time.Millisecond, ResetAfter: time.Minute}
	var out syncBuffer
	startApp(t, spec, withLogTo(&out))
	var ds []time.Duration
	eventually(t, 15*time.Second, "20 backoffs", func() bool {
		ds = backoffDelays(t, &out, "web-1")
		return len(ds) >= 20
	})
	for i, d := range ds {
		if d > spec.Backoff.Max {
			t.Errorf("delay %d is %v, more than backoff.max %v", i, d, spec.Backoff.Max)
		}
	}
}

// TestZeroResetAfterHonoured: reset_after = "0s" means a worker that got
// into rotation always starts again from backoff.min (issue 10, item 6).
func TestZeroResetAfterHonoured(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	spec.Backoff = config.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second, ResetAfter: 0}
	var out syncBuffer
	a := startApp(t, spec, withLogTo(&out))
	waitReady(t, a, 2)
	for range 4 {
		pid := killReady(t, a, "web-1", 0)
		eventually(t, 15*time.Second, "web-1 back", func() bool {
			p, ok := readyPIDs(a, 2)
			return ok && p["web-1"] != pid
		})
	}
	ds := backoffDelays(t, &out, "web-1")
	t.Logf("delays %v", ds)
	if len(ds) != 4 {
		t.Fatalf("%d backoffs logged, want 4", len(ds))
	}
	for i, d := range ds {
		if d > spec.Backoff.Min*12/10 {
			t.Errorf("delay %d is %v: reset_after = 0 did not reset it to min", i, d)
		}
	}
}

// TestUnhealthyTimeNotCountedForReset: a worker out of rotation (unhealthy)
// for longer than reset_after has not earned a reset of its delay (issue
// 10, item 6).
func TestUnhealthyTimeNotCountedForReset(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	sick := filepath.Join(t.TempDir(), "sick")
	spec.Env[envSickFile] = sick
	spec.Health = &config.Health{Type: "http", Path: "/healthz", Interval: 50 * time.Millisecond,
		Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}
	spec.Backoff = config.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second, ResetAfter: time.Second}
	var out syncBuffer
	a := startApp(t, spec, withLogTo(&out))
	waitReady(t, a, 2)
	for range 2 { // delays 200ms and 400ms; the next one is 800ms
		pid := killReady(t, a, "web-1", 0)
		eventually(t, 15*time.Second, "web-1 back", func() bool {
			p, ok := readyPIDs(a, 2)
			return ok && p["web-1"] != pid
		})
	}
	if err := os.WriteFile(sick+".web-1", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var pid int
	eventually(t, 5*time.Second, "web-1 unhealthy", func() bool {
		for _, w := range a.Status().Workers {
			if w.ID == "web-1" && w.State == StateUnhealthy {
				pid = w.PID
				return true
			}
		}
		return false
	})
	unhealthy := time.Now()
	eventually(t, 5*time.Second, "reset_after passed since web-1 got ready", func() bool {
		return time.Since(unhealthy) > 1500*time.Millisecond
	})
	if err := unix.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ds []time.Duration
	eventually(t, 5*time.Second, "the third backoff", func() bool {
		ds = backoffDelays(t, &out, "web-1")
		return len(ds) >= 3
	})
	t.Logf("delays %v", ds)
	if ds[2] < 600*time.Millisecond {
		t.Errorf("third delay %v: time spent unhealthy reset the backoff", ds[2])
	}
}

// TestRestartAfterTimerDisarmedByReload: a reload that sets restart_after
// to 0 stops a restart already pending for an unhealthy worker (issue 10,
// item 6).
func TestRestartAfterTimerDisarmedByReload(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	sick := filepath.Join(t.TempDir(), "sick")
	spec.Env[envSickFile] = sick
	spec.Health = &config.Health{Type: "http", Path: "/healthz", Interval: 50 * time.Millisecond,
		Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1, RestartAfter: 800 * time.Millisecond}
	a := startApp(t, spec)
	pid := waitReady(t, a, 1)["web-1"]
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "web-1 unhealthy", func() bool {
		st := a.Status()
		return len(st.Workers) == 1 && st.Workers[0].State == StateUnhealthy
	})
	next := *spec
	h := *spec.Health
	h.RestartAfter = 0
	next.Health = &h
	a.Update(&next)
	// Bounded look past the old restart_after: the worker must stay.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		st := a.Status()
		if len(st.Workers) != 1 || st.Workers[0].PID != pid {
			t.Fatalf("worker restarted after restart_after was set to 0: %+v", st.Workers)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			return
		}
	}
	os.Remove(sick)
	waitReady(t, a, 1)
}
