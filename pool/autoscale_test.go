package pool

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// autoscaleSpec is an app with max_inflight = 1 that autoscales between
// lo and hi with short windows.
func autoscaleSpec(t *testing.T, instances, lo, hi int) *config.App {
	spec := testSpec(t, "ok", instances)
	spec.MaxInflight = 1
	spec.Autoscale = &config.Autoscale{Min: lo, Max: hi, ScaleUpAfter: 100 * time.Millisecond,
		ScaleDownAfter: 300 * time.Millisecond, Cooldown: 50 * time.Millisecond, Interval: 20 * time.Millisecond}
	return spec
}

// load simulates the proxy: it holds one request in flight on every
// backend in the table (as max_inflight = 1 admits) and keeps queued
// requests counted, until released.
type load struct {
	a    *App
	held map[*Backend]bool
}

func newLoad(a *App) *load { return &load{a: a, held: map[*Backend]bool{}} }

// fill takes every backend in the table not held yet.
func (l *load) fill() {
	for _, b := range l.a.Table().Backends {
		if !l.held[b] && b.Acquire() {
			l.held[b] = true
		}
	}
}

// release ends every held request.
func (l *load) release() {
	for b := range l.held {
		b.Release()
	}
	clear(l.held)
}

// TestAutoscaleUpUnderSaturationAndDownOneAtATime saturates an app of
// min 1 / max 4 (every worker at max_inflight, requests queued): it grows
// to 4; once the load ends it shrinks back to 1, one worker at a time,
// never with two workers leaving at once.
func TestAutoscaleUpUnderSaturationAndDownOneAtATime(t *testing.T) {
	a := startApp(t, autoscaleSpec(t, 1, 1, 4))
	waitReady(t, a, 1)
	l := newLoad(a)
	a.stats.Queued.Store(2)
	eventually(t, 15*time.Second, "4 ready workers under saturation", func() bool {
		l.fill()
		_, ok := readyPIDs(a, 4)
		return ok
	})
	st := a.Status().Autoscale
	if st == nil || st.Current != 4 || st.Min != 1 || st.Max != 4 || st.Last == nil || st.Last.Direction != ScaleUp {
		t.Fatalf("autoscale status %+v, want current 4 of 1..4 after a scale up", st)
	}
	if got := a.stats.ScaleDowns.Load(); got != 0 {
		t.Errorf("%d scale-downs under saturation", got)
	}
	ups := a.stats.ScaleUps.Load()

	// The load ends: back to 1, one worker at a time.
	a.stats.Queued.Store(0)
	l.release()
	seen := []int{4}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		st := a.Status()
		leaving := 0
		for _, w := range st.Workers {
			if w.State == StateDraining || w.State == StateStopping {
				leaving++
			}
		}
		if leaving > 1 {
			t.Fatalf("%d workers leaving at once: %+v", leaving, st.Workers)
		}
		if n := st.Instances; n != seen[len(seen)-1] {
			seen = append(seen, n)
		}
		if _, ok := readyPIDs(a, 1); ok && st.Instances == 1 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if want := []int{4, 3, 2, 1}; !equalInts(seen, want) {
		t.Fatalf("instances went %v, want %v", seen, want)
	}
	if got := a.stats.ScaleDowns.Load(); got != 3 {
		t.Errorf("%d scale-down decisions, want 3", got)
	}
	if got := a.stats.ScaleUps.Load(); got != ups {
		t.Errorf("scaled up again without load: %d -> %d", ups, got)
	}
	if last := a.Status().Autoscale.Last; last.Direction != ScaleDown || last.From != 2 || last.To != 1 || last.Reason == "" {
		t.Errorf("last decision %+v, want down 2 -> 1 with a reason", last)
	}
	// Idle at min: nothing more happens.
	time.Sleep(500 * time.Millisecond)
	if st := a.Status(); st.Instances != 1 || a.stats.ScaleDowns.Load() != 3 {
		t.Errorf("below min: instances %d, %d scale-downs", st.Instances, a.stats.ScaleDowns.Load())
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAutoscaleScaleUpSizedByTheQueue checks one decision adds a worker per
// max_inflight requests queued, capped at max.
func TestAutoscaleScaleUpSizedByTheQueue(t *testing.T) {
	spec := autoscaleSpec(t, 1, 1, 8)
	spec.Autoscale.Cooldown = time.Hour // one decision only
	a := startApp(t, spec)
	waitReady(t, a, 1)
	l := newLoad(a)
	defer l.release()
	l.fill()
	a.stats.Queued.Store(3)
	eventually(t, 10*time.Second, "a scale up", func() bool { return a.stats.ScaleUps.Load() > 0 })
	if last := a.Status().Autoscale.Last; last.From != 1 || last.To != 4 {
		t.Errorf("decision %+v, want 1 -> 4 for 3 queued at max_inflight 1", last)
	}
	a.stats.Queued.Store(0)
}

// TestAutoscalePausedByRoll holds a rolling restart in its drain (the old
// worker has a request in flight) while the app is saturated: no decision
// is taken until the roll ends, then the app scales up.
func TestAutoscalePausedByRoll(t *testing.T) {
	spec := autoscaleSpec(t, 1, 1, 2)
	spec.DrainTimeout = 10 * time.Second
	a := startApp(t, spec)
	waitReady(t, a, 1)
	old := a.Table().Backends[0]
	if !old.Acquire() {
		t.Fatal("cannot acquire the only backend")
	}
	released := false
	release := func() {
		if !released {
			released = true
			old.Release()
		}
	}
	defer release()
	a.stats.Queued.Store(1)
	defer a.stats.Queued.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rolled := make(chan error, 1)
	go func() { rolled <- a.Restart(ctx) }()
	// The candidate takes the slot; the old worker drains, held by the
	// request in flight: the roll runs with nothing starting.
	eventually(t, 10*time.Second, "the old worker draining", func() bool {
		for _, w := range a.Status().Workers {
			if w.State == StateDraining {
				return true
			}
		}
		return false
	})
	time.Sleep(10 * spec.Autoscale.ScaleUpAfter)
	if n := a.stats.ScaleUps.Load(); n != 0 || a.Status().Instances != 1 {
		t.Fatalf("%d scale-ups, instances %d during the roll, want none", n, a.Status().Instances)
	}
	release()
	if err := <-rolled; err != nil {
		t.Fatal(err)
	}
	// Still saturated (queued): once the roll is over, the app scales up.
	eventually(t, 10*time.Second, "a scale up after the roll", func() bool { return a.stats.ScaleUps.Load() == 1 })
	waitReady(t, a, 2)
}

// TestAutoscaleReloadAppliesBoundsWithoutRestarts changes the bounds with
// Update: the count is fitted to them and no worker is restarted.
func TestAutoscaleReloadAppliesBoundsWithoutRestarts(t *testing.T) {
	spec := autoscaleSpec(t, 3, 1, 4)
	a := startApp(t, spec)
	before := waitReady(t, a, 3)

	narrower := *spec
	narrower.Autoscale = &config.Autoscale{Min: 2, Max: 2, ScaleUpAfter: time.Hour, ScaleDownAfter: time.Hour,
		Cooldown: time.Hour, Interval: 20 * time.Millisecond}
	a.Update(&narrower)
	after := waitReady(t, a, 2)
	for _, id := range []string{"web-1", "web-2"} {
		if after[id] != before[id] {
			t.Errorf("%s restarted by the reload: pid %d -> %d", id, before[id], after[id])
		}
	}
	if st := a.Status().Autoscale; st.Min != 2 || st.Max != 2 || st.Current != 2 {
		t.Errorf("autoscale status %+v, want 2 of 2..2", st)
	}
	// A reload that widens them keeps the count; a reset does not move it.
	wider := narrower
	wider.Autoscale = &config.Autoscale{Min: 1, Max: 6, ScaleUpAfter: time.Hour, ScaleDownAfter: time.Hour,
		Cooldown: time.Hour, Interval: 20 * time.Millisecond}
	a.Update(&wider)
	a.ResetScale()
	time.Sleep(100 * time.Millisecond)
	if now, ok := readyPIDs(a, 2); !ok || now["web-1"] != before["web-1"] || now["web-2"] != before["web-2"] {
		t.Errorf("after widening the bounds: %v (ok %v), want web-1 and web-2 untouched", now, ok)
	}
	for _, w := range a.Status().Workers {
		if w.Restarts != 0 || w.Replacements[CauseReload] != 0 {
			t.Errorf("%s: restarts %d replacements %v", w.ID, w.Restarts, w.Replacements)
		}
	}
}

// TestScaleWithinAutoscaleBounds checks that a runtime scale of an
// autoscaled app must stay within its bounds.
func TestScaleWithinAutoscaleBounds(t *testing.T) {
	spec := autoscaleSpec(t, 1, 1, 3)
	spec.Autoscale.ScaleDownAfter = time.Hour
	a := startApp(t, spec)
	waitReady(t, a, 1)
	for _, n := range []int{4, 10} {
		if _, err := a.Scale(n); !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("Scale(%d) with max 3: %v, want ErrOutOfBounds", n, err)
		}
	}
	if prev, err := a.Scale(3); err != nil || prev != 1 {
		t.Fatalf("Scale(3) = %d, %v", prev, err)
	}
	waitReady(t, a, 3)
	if st := a.Status().Autoscale; st.Current != 3 {
		t.Errorf("autoscale current %d after Scale(3)", st.Current)
	}
}

// TestAutoscaleStopsWithTheApp checks that Stop cancels autoscaling: a
// saturated app whose stop takes a second (its worker ignores SIGTERM)
// decides nothing meanwhile.
func TestAutoscaleStopsWithTheApp(t *testing.T) {
	spec := autoscaleSpec(t, 1, 1, 4)
	spec.Env[envMode] = "ignoreterm"
	spec.StopTimeout = time.Second
	spec.Autoscale.ScaleUpAfter = 200 * time.Millisecond
	a := New(spec, Options{Logger: testLogger(), Ports: testPorts, Reaper: testReaper})
	a.Start()
	waitReady(t, a, 1)
	a.stats.Queued.Store(5)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 4*spec.Autoscale.ScaleUpAfter {
		t.Fatalf("stop took %s: too short to show anything", took)
	}
	if n := a.stats.ScaleUps.Load(); n != 0 {
		t.Errorf("%d scale-ups after Stop", n)
	}
	if n := len(a.Status().Workers); n != 0 {
		t.Errorf("%d workers after Stop", n)
	}
}

// TestAutoscaleScaleDownWaitsForTheDrain holds a request on the worker a
// scale-down removes: the next scale-down waits until it has stopped,
// though the app stays unsaturated for many scale_down_after windows.
func TestAutoscaleScaleDownWaitsForTheDrain(t *testing.T) {
	spec := autoscaleSpec(t, 3, 1, 3)
	spec.DrainTimeout = 10 * time.Second
	a := startApp(t, spec)
	waitReady(t, a, 3)
	var last *Backend
	for _, b := range a.Table().Backends {
		if b.ID == "web-3" {
			last = b
		}
	}
	if last == nil || !last.Acquire() {
		t.Fatal("cannot hold a request on web-3")
	}
	held := true
	defer func() {
		if held {
			last.Release()
		}
	}()
	eventually(t, 10*time.Second, "web-3 draining", func() bool {
		for _, w := range a.Status().Workers {
			if w.ID == "web-3" && w.State == StateDraining {
				return true
			}
		}
		return false
	})
	time.Sleep(5 * spec.Autoscale.ScaleDownAfter)
	if n := a.stats.ScaleDowns.Load(); n != 1 || a.Status().Instances != 2 {
		t.Fatalf("%d scale-downs, instances %d while web-3 drains, want 1 and 2", n, a.Status().Instances)
	}
	last.Release()
	held = false
	waitReady(t, a, 1)
	if n := a.stats.ScaleDowns.Load(); n != 2 {
		t.Errorf("%d scale-downs, want 2", n)
	}
}
