package pool

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/corral-dev/corral/config"
)

// roll is a running rolling restart, driven by the supervisor: candidates
// are started (at most surge at once), and only when one is ready does it
// take its slot and the old worker drain and stop.
type roll struct {
	gen     int
	spec    *config.App
	queue   []*slot          // slots still to replace
	pending map[*worker]bool // candidates started, not ready yet
	old     int              // replaced workers not yet stopped
	waiters []chan<- error

	// again is set when another roll was asked for while this one ran.
	again        bool
	againReason  string
	againWaiters []chan<- error
}

// startRoll starts a rolling restart, or coalesces into the running one:
// then one more roll runs after it. The waiters (buffered) get the outcome.
func (a *App) startRoll(reason string, waiters ...chan<- error) {
	if a.stopping {
		for _, ch := range waiters {
			ch <- ErrStopped
		}
		return
	}
	if r := a.roll; r != nil {
		r.again, r.againReason = true, reason
		r.againWaiters = append(r.againWaiters, waiters...)
		return
	}
	a.gen++
	r := &roll{gen: a.gen, spec: a.spec, queue: a.sortedSlots(), pending: map[*worker]bool{}, waiters: waiters}
	a.roll = r
	a.lastRoll = RollStatus{State: "running", Reason: reason, Started: time.Now()}
	a.log.Info("rolling restart started", "reason", reason, "generation", r.gen)
	a.stepRoll()
	a.publish()
}

// sortedSlots returns the slots by number.
func (a *App) sortedSlots() []*slot {
	ss := make([]*slot, 0, len(a.slots))
	for _, s := range a.slots {
		ss = append(ss, s)
	}
	slices.SortFunc(ss, func(x, y *slot) int { return cmp.Compare(x.num, y.num) })
	return ss
}

// stepRoll starts candidates up to the surge and ends the roll when every
// slot is replaced and every old worker stopped.
func (a *App) stepRoll() {
	r := a.roll
	surge := max(a.spec.Surge, 1)
	for len(r.pending) < surge && len(r.queue) > 0 {
		s := r.queue[0]
		r.queue = r.queue[1:]
		if s.removed {
			continue
		}
		w, err := a.spawn(s, r.spec, r.gen, true)
		if err != nil {
			a.abortRoll(err)
			return
		}
		r.pending[w] = true
	}
	if len(r.pending) == 0 && len(r.queue) == 0 && r.old == 0 {
		a.endRoll(nil)
	}
}

// promote gives a ready candidate its slot and drain-stops the worker it replaces.
func (a *App) promote(w *worker) {
	r := a.roll
	if r == nil || !r.pending[w] {
		return
	}
	delete(r.pending, w)
	w.candidate = false
	s := w.slot
	old := s.cur
	s.cur, s.spec, s.gen = w, r.spec, r.gen
	s.cancelRestart()
	if old != nil && !old.stopping {
		r.old++
		a.stopWorker(old, fmt.Sprintf("replaced by generation %d", r.gen), true, func() {
			r.old--
			if a.roll == r {
				a.stepRoll()
				a.publish()
			}
		})
	}
	a.stepRoll()
}

// abortRoll ends the running roll as failed: candidates are stopped, the
// workers not yet replaced keep serving.
func (a *App) abortRoll(err error) {
	r := a.roll
	for w := range r.pending {
		w.candidate = false
		a.stopWorker(w, "rolling restart failed", false, nil)
	}
	r.pending = nil
	a.log.Error("rolling restart failed, old workers keep serving", "error", err)
	a.endRoll(fmt.Errorf("rolling restart of %s: %w", a.name, err))
}

// endRoll records the outcome, answers the waiters, then runs a coalesced
// roll or applies a scale deferred while the roll ran.
func (a *App) endRoll(err error) {
	r := a.roll
	a.roll = nil
	a.lastRoll.Finished = time.Now()
	if err != nil {
		a.lastRoll.State, a.lastRoll.Message = "failed", err.Error()
	} else {
		a.lastRoll.State = "done"
		a.log.Info("rolling restart done", "generation", r.gen,
			"took", a.lastRoll.Finished.Sub(a.lastRoll.Started).Round(time.Millisecond))
	}
	for _, ch := range r.waiters {
		ch <- err
	}
	if r.again {
		a.startRoll(r.againReason, r.againWaiters...)
		return
	}
	a.reconcile()
}

// reconcile starts or drain-stops slots until there are spec.Instances. A
// scale asked for during a roll waits for the roll's end.
func (a *App) reconcile() {
	if a.roll != nil || a.stopping {
		return
	}
	want := a.spec.Instances
	for n := 1; n <= want; n++ {
		if _, ok := a.slots[a.name+"-"+fmt.Sprint(n)]; !ok {
			s := a.newSlot(n)
			a.fill(s)
		}
	}
	for id, s := range a.slots {
		if s.num <= want {
			continue
		}
		s.removed = true
		s.cancelRestart()
		delete(a.slots, id)
		if s.cur != nil {
			a.log.Info("scaling down", "worker", id)
			a.stopWorker(s.cur, "scaled down", true, nil)
			s.cur = nil
		}
	}
	a.publish()
}
