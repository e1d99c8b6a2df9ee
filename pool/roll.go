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
// take its slot and the old worker drain and stop. A roll replaces every
// slot, or only some (a worker restart, a recycle).
type roll struct {
	gen     int
	spec    *config.App
	cause   string           // replacement cause counted for each replaced slot
	queue   []*slot          // slots still to replace
	pending map[*worker]bool // candidates started, not ready yet
	old     int              // replaced workers not yet stopped
	waiters []chan<- error

	// next is asked for while this roll ran; it runs after it.
	next *rollAsk
}

// rollAsk is a rolling restart asked for: of every slot (only nil) or of
// the slots named in only.
type rollAsk struct {
	reason  string
	cause   string
	only    map[string]bool
	waiters []chan<- error
}

// merge folds b, asked for later, into k: the union of their slots, b's
// reason, and the cause of the one that covers every slot (else b's).
func (k *rollAsk) merge(b *rollAsk) {
	switch {
	case k.only == nil && b.only != nil:
		// k covers every slot: its cause stays.
	case b.only == nil:
		k.only, k.cause = nil, b.cause
	default:
		for id := range b.only {
			k.only[id] = true
		}
		k.cause = b.cause
	}
	k.reason = b.reason
	k.waiters = append(k.waiters, b.waiters...)
}

// startRoll starts a rolling restart of every slot, or coalesces into the
// running one: then one more roll runs after it. The waiters (buffered) get
// the outcome.
func (a *App) startRoll(reason, cause string, waiters ...chan<- error) {
	a.ask(&rollAsk{reason: reason, cause: cause, waiters: waiters})
}

// ask starts the roll k asks for, or queues it after the running roll,
// merged with any roll queued already.
func (a *App) ask(k *rollAsk) {
	if a.stopping {
		for _, ch := range k.waiters {
			ch <- ErrStopped
		}
		return
	}
	if r := a.roll; r != nil {
		if r.next == nil {
			r.next = k
		} else {
			r.next.merge(k)
		}
		return
	}
	queue := a.sortedSlots()
	if k.only != nil {
		queue = slices.DeleteFunc(queue, func(s *slot) bool { return !k.only[s.id] })
		if len(queue) == 0 {
			// Every slot asked for was scaled away meanwhile.
			for _, ch := range k.waiters {
				ch <- nil
			}
			a.reconcile()
			return
		}
	}
	a.gen++
	r := &roll{gen: a.gen, spec: a.spec, cause: k.cause, queue: queue, pending: map[*worker]bool{}, waiters: k.waiters}
	a.roll = r
	a.lastRoll = RollStatus{State: "running", Reason: k.reason, Started: time.Now()}
	a.log.Info("rolling restart started", "reason", k.reason, "generation", r.gen, "workers", len(queue))
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
	s.stats.AddReplacement(r.cause)
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
	// The status shows the outcome before any waiter hears it: a caller of
	// Restart that reads Status next must not see the roll still running.
	a.publishStatus()
	for _, ch := range r.waiters {
		ch <- err
	}
	if r.next != nil {
		a.ask(r.next)
		return
	}
	a.reconcile()
}

// reconcile starts or drain-stops slots until there are instances(). A
// scale asked for during a roll waits for the roll's end.
func (a *App) reconcile() {
	if a.roll != nil || a.stopping {
		return
	}
	want := a.instances()
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
