package pool

import (
	"errors"
	"fmt"
	"time"
)

// Autoscaling: every autoscale.check_interval the supervisor samples the
// app's load from the routing table's atomic counters (the same ones the
// proxy admits requests by) and decides. The rule, as in the README:
//
//   - saturated: requests are queued, or the workers in rotation carry, all
//     together, at least their number times max_inflight in flight;
//   - no decision while a roll runs, the app stops, or a worker is starting
//     (its capacity is on the way); each of these starts both windows over;
//   - up: saturated at every check for scale_up_after, below max and at
//     least cooldown since the last decision: add ceil(queued/max_inflight)
//     workers (at least one, at most up to max);
//   - down: saturated at no check for scale_down_after, above min, at least
//     cooldown since the last decision, and the worker the previous
//     scale-down removed has stopped: remove one worker (the highest slot,
//     drained first);
//   - every decision starts both windows over.

// ErrOutOfBounds is returned (wrapped) by Scale for a count outside the
// app's autoscale bounds.
var ErrOutOfBounds = errors.New("instances out of autoscale bounds")

// Autoscale directions.
const (
	ScaleUp   = "up"
	ScaleDown = "down"
)

// AutoscaleStatus shows an autoscaled app's bounds and last decision.
type AutoscaleStatus struct {
	Min     int `json:"min"`
	Max     int `json:"max"`
	Current int `json:"current"`
	// Last is the most recent decision (nil before the first).
	Last *ScaleDecision `json:"last,omitempty"`
}

// ScaleDecision is one autoscale decision.
type ScaleDecision struct {
	Direction string    `json:"direction"` // ScaleUp or ScaleDown
	From      int       `json:"from"`
	To        int       `json:"to"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

// autoscaler is the decision state, owned by the supervisor.
type autoscaler struct {
	timer *time.Timer
	// busySince and idleSince start the current run of saturated and of
	// unsaturated checks (zero: not in one).
	busySince, idleSince time.Time
	lastAt               time.Time // last decision (or runtime scale)
	last                 *ScaleDecision
}

// restart starts both windows over.
func (s *autoscaler) restart() { s.busySince, s.idleSince = time.Time{}, time.Time{} }

// armAutoscale (re)arms the next check; nothing when autoscaling is off.
func (a *App) armAutoscale() {
	if a.auto.timer != nil {
		a.auto.timer.Stop()
		a.auto.timer = nil
	}
	as := a.spec.Autoscale
	if a.stopping || as == nil {
		return
	}
	var t *time.Timer
	t = a.after(as.Interval, func() {
		if a.auto.timer != t {
			return // re-armed or stopped since
		}
		a.auto.timer = nil
		a.autoscaleCheck(time.Now())
		a.armAutoscale()
	})
	a.auto.timer = t
}

// saturation samples the routing table: whether the app is saturated, and
// the numbers that say so.
func (a *App) saturation() (busy bool, inflight, queued int64, ready int) {
	t := a.table.Load()
	for _, b := range t.Backends {
		inflight += b.Inflight.Load()
	}
	ready = len(t.Backends)
	queued = a.stats.Queued.Load()
	// config requires max_inflight with autoscale; without it only a queue
	// (which it implies) could say so.
	capacity := int64(ready) * int64(a.spec.MaxInflight)
	busy = queued > 0 || (ready > 0 && capacity > 0 && inflight >= capacity)
	return busy, inflight, queued, ready
}

// autoscalePaused says why no decision may be taken now ("" = none).
func (a *App) autoscalePaused() string {
	if a.roll != nil {
		return "rolling restart"
	}
	for w := range a.workers {
		if w.state == StateStarting && !w.stopping && !w.exited {
			return "worker starting"
		}
	}
	return ""
}

// scaleDownPending reports whether a worker a scale-down removed has not
// stopped yet: scale-downs go one worker at a time.
func (a *App) scaleDownPending() bool {
	for w := range a.workers {
		if w.slot.removed && !w.finished {
			return true
		}
	}
	return false
}

// autoscaleCheck is one check of the rule, at now.
func (a *App) autoscaleCheck(now time.Time) {
	as, s := a.spec.Autoscale, &a.auto
	if as == nil || a.stopping {
		return
	}
	if a.autoscalePaused() != "" {
		s.restart()
		return
	}
	busy, inflight, queued, ready := a.saturation()
	if busy {
		s.idleSince = time.Time{}
		if s.busySince.IsZero() {
			s.busySince = now
		}
	} else {
		s.busySince = time.Time{}
		if s.idleSince.IsZero() {
			s.idleSince = now
		}
	}
	cur := a.instances()
	if !s.lastAt.IsZero() && now.Sub(s.lastAt) < as.Cooldown {
		return
	}
	switch {
	case busy && cur < as.Max && now.Sub(s.busySince) >= as.ScaleUpAfter:
		mi := int64(max(a.spec.MaxInflight, 1))
		add := int(min(max((queued+mi-1)/mi, 1), int64(as.Max-cur)))
		a.decide(now, ScaleUp, cur, cur+add, fmt.Sprintf("saturated for %s: %d in flight on %d workers at max_inflight %d, %d queued",
			now.Sub(s.busySince).Round(time.Millisecond), inflight, ready, a.spec.MaxInflight, queued))
	case !busy && cur > as.Min && now.Sub(s.idleSince) >= as.ScaleDownAfter && !a.scaleDownPending():
		a.decide(now, ScaleDown, cur, cur-1, fmt.Sprintf("not saturated for %s: %d in flight on %d workers at max_inflight %d",
			now.Sub(s.idleSince).Round(time.Millisecond), inflight, ready, a.spec.MaxInflight))
	}
}

// decide applies one autoscale decision.
func (a *App) decide(now time.Time, dir string, from, to int, reason string) {
	a.auto.last = &ScaleDecision{Direction: dir, From: from, To: to, Reason: reason, At: now}
	a.auto.lastAt = now
	a.auto.restart()
	a.log.Info("autoscale", "direction", dir, "from", from, "to", to, "reason", reason)
	a.scaled = to
	a.reconcile()
	// Counted once the status shows the decision.
	if dir == ScaleUp {
		a.stats.ScaleUps.Add(1)
	} else {
		a.stats.ScaleDowns.Add(1)
	}
}

// autoscaleStatus is the status of the app's autoscaling; nil when off.
func (a *App) autoscaleStatus() *AutoscaleStatus {
	as := a.spec.Autoscale
	if as == nil {
		return nil
	}
	st := &AutoscaleStatus{Min: as.Min, Max: as.Max, Current: a.instances()}
	if l := a.auto.last; l != nil {
		c := *l
		st.Last = &c
	}
	return st
}

// clampScale fits the current count into the autoscale bounds of a new spec
// (a reload): the count autoscaling reached is kept, within the new bounds.
func (a *App) clampScale(cur int) {
	as := a.spec.Autoscale
	if as == nil {
		a.scaled = 0
		return
	}
	a.scaled = min(max(cur, as.Min), as.Max)
}
