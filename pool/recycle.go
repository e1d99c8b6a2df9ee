package pool

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Recycling: a round every recycle.check_interval on the supervisor looks
// for a worker due (max_requests, max_age, then max_memory, read off the
// supervisor) and replaces it with a roll of its one slot. Only one roll
// runs at a time, so at most one worker of the app recycles at once, a
// running rolling restart pauses recycling, and the candidate is ready
// before the old worker leaves, so capacity never dips.

// armRecycle (re)arms the next recycle round; nothing when recycling is off.
func (a *App) armRecycle() {
	if a.recycleTimer != nil {
		a.recycleTimer.Stop()
		a.recycleTimer = nil
	}
	rc := a.spec.Recycle
	if a.stopping || !rc.On() {
		return
	}
	var t *time.Timer
	t = a.after(orDefault(rc.Interval, defaultRecycleInterval), func() {
		if a.recycleTimer != t {
			return // re-armed or stopped since
		}
		a.recycleTimer = nil
		a.recycleRound()
		a.armRecycle()
	})
	a.recycleTimer = t
}

// defaultRecycleInterval is check_interval when a spec leaves it zero.
const defaultRecycleInterval = 5 * time.Second

// jittered draws a threshold in [n, n*1.1], so workers started together
// do not all reach their limit together.
func jittered(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return n + rand.Int64N(n/10+1)
}

// recycleCandidates are the workers a recycle may replace: in rotation,
// filling their slot, not on their way out.
func (a *App) recycleCandidates() []*worker {
	var ws []*worker
	for _, w := range a.sortedWorkers() {
		if w.state == StateReady && w.slot.cur == w && !w.candidate && !w.stopping && !w.exited {
			ws = append(ws, w)
		}
	}
	return ws
}

// recycleRound replaces one worker due, if any and no roll runs.
func (a *App) recycleRound() {
	if a.stopping || a.roll != nil || a.memReading {
		return
	}
	rc := a.spec.Recycle
	now := time.Now()
	ws := a.recycleCandidates()
	// The oldest worker due goes first: a young one that is due again
	// (a busy app with a low max_requests) must not starve the others.
	var due *worker
	var why string
	for _, w := range ws {
		reason := ""
		if rc.MaxRequests > 0 {
			if w.maxRequests == 0 {
				w.maxRequests = jittered(int64(rc.MaxRequests))
			}
			if n := int64(w.slot.stats.Requests.Load() - w.requestsBase); n >= w.maxRequests {
				reason = fmt.Sprintf("served %d requests (max_requests %d)", n, rc.MaxRequests)
			}
		}
		if rc.MaxAge > 0 && reason == "" {
			if w.maxAge == 0 {
				w.maxAge = time.Duration(jittered(int64(rc.MaxAge)))
			}
			if age := now.Sub(w.startedAt); age >= w.maxAge {
				reason = fmt.Sprintf("ran %s (max_age %s)", age.Round(time.Second), rc.MaxAge)
			}
		}
		if reason != "" && (due == nil || w.startedAt.Before(due.startedAt)) {
			due, why = w, reason
		}
	}
	if due != nil {
		a.recycle(due, why)
		return
	}
	if rc.MaxMemory <= 0 || len(ws) == 0 {
		return
	}
	// Reading /proc takes a while with many processes: off the supervisor.
	a.memReading = true
	pgids := make(map[int]bool, len(ws))
	for _, w := range ws {
		pgids[w.proc.pid] = true
	}
	limit := rc.MaxMemory
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		rss := groupRSS(pgids)
		a.post(func() {
			a.memReading = false
			if a.stopping || a.roll != nil {
				return
			}
			var due *worker
			for _, w := range ws {
				if rss[w.proc.pid] > limit && w.state == StateReady && w.slot.cur == w && !w.stopping && !w.exited &&
					(due == nil || w.startedAt.Before(due.startedAt)) {
					due = w
				}
			}
			if due != nil {
				a.recycle(due, fmt.Sprintf("process group RSS %d bytes over max_memory %d", rss[due.proc.pid], limit))
			}
		})
	}()
}

// recycle replaces w the zero-downtime way.
func (a *App) recycle(w *worker, reason string) {
	w.log.Info("recycling worker", "reason", reason)
	a.ask(&rollAsk{reason: "recycle " + w.slot.id + ": " + reason, cause: CauseRecycle, only: map[string]bool{w.slot.id: true}})
}
