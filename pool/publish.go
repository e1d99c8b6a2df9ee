package pool

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/health"
)

// statusView is the immutable snapshot Status starts from, with references
// to the live counters it merges in at read time.
type statusView struct {
	st   AppStatus
	live []liveRefs // parallel to st.Workers
}

type liveRefs struct {
	backend *Backend
	stats   *WorkerStats
	probe   *health.Probe
	mem     *atomic.Int64 // the worker's sampled RSS; nil for a slot in backoff
}

// Status returns a snapshot of the app; it never waits for the supervisor.
func (a *App) Status() AppStatus {
	v := a.status.Load()
	st := v.st
	st.Queued = a.stats.Queued.Load()
	st.Workers = slices.Clone(v.st.Workers)
	now := time.Now()
	for i := range st.Workers {
		ws, live := &st.Workers[i], v.live[i]
		if live.stats != nil {
			ws.Restarts = live.stats.Restarts()
			ws.Replacements = make(map[string]uint64, len(ReplacementCauses))
			for _, c := range ReplacementCauses {
				ws.Replacements[c] = live.stats.Replacements(c)
			}
			ws.Requests = live.stats.Requests.Load()
			ws.CPUSeconds = live.stats.CPUSeconds()
		}
		if live.mem != nil {
			ws.MemoryBytes = live.mem.Load()
		}
		if b := live.backend; b != nil {
			ws.Inflight = b.Inflight.Load()
			ws.Ejected = b.Ejected(now)
			if ws.Ejected {
				if r := b.LastEjectReason.Load(); r != nil {
					ws.EjectReason = *r
				}
			}
		}
		if live.probe != nil {
			h := live.probe.Stats()
			ws.Health = &h
		}
	}
	return st
}

// publish publishes a new routing table when rotation or the spec changed,
// then a new status snapshot, and tracks exit_on_failure.
func (a *App) publish() {
	var backends []*Backend
	ready := 0
	for _, w := range a.sortedWorkers() {
		// An exited worker leaves rotation at once, before its tree is gone.
		if w.state == StateReady && !w.exited {
			ready++
			if w.backend != nil {
				backends = append(backends, w.backend)
			}
		}
	}
	a.ready = ready
	cur := a.table.Load()
	if cur.App != a.spec || !slices.Equal(cur.Backends, backends) {
		a.version++
		a.table.Store(&Table{App: a.spec, Backends: backends, Stats: a.stats, Version: a.version})
	}
	a.trackGiveUp(ready > 0)
	if ready == 0 {
		a.rescue()
	}
	a.publishStatus()
}

// sortedWorkers returns the live workers by slot number, then generation.
func (a *App) sortedWorkers() []*worker {
	ws := make([]*worker, 0, len(a.workers))
	for w := range a.workers {
		ws = append(ws, w)
	}
	slices.SortFunc(ws, func(x, y *worker) int {
		return cmp.Or(cmp.Compare(x.slot.num, y.slot.num), cmp.Compare(x.gen, y.gen))
	})
	return ws
}

// publishStatus stores a new status snapshot. Workers that have exited are
// left out; a slot waiting to restart shows as one backoff entry.
func (a *App) publishStatus() {
	v := &statusView{st: AppStatus{
		Name:       a.name,
		Instances:  a.instances(),
		Configured: a.spec.Instances,
		Ready:      a.ready,
		Roll:       a.lastRoll,
		Autoscale:  a.autoscaleStatus(),
	}}
	add := func(ws WorkerStatus, live liveRefs) {
		v.st.Workers = append(v.st.Workers, ws)
		v.live = append(v.live, live)
	}
	for _, w := range a.sortedWorkers() {
		if w.exited {
			continue
		}
		add(WorkerStatus{
			ID: w.slot.id, PID: w.proc.pid, Port: w.addr.port, Socket: w.addr.socket, State: w.state, Reason: w.reason,
			StartedAt: w.startedAt, ReadyAt: w.readyAt, Generation: w.gen, LastExit: w.slot.lastExit,
		}, liveRefs{backend: w.backend, stats: w.slot.stats, probe: w.probe, mem: &w.memBytes})
	}
	for _, s := range a.sortedSlots() {
		if s.restartTimer != nil {
			add(WorkerStatus{ID: s.id, State: StateBackoff, Reason: s.reason, Generation: s.gen, LastExit: s.lastExit},
				liveRefs{stats: s.stats})
		}
	}
	slices.SortStableFunc(v.st.Workers, func(x, y WorkerStatus) int { return cmp.Compare(slotNum(x.ID), slotNum(y.ID)) })
	a.status.Store(v)
}

// slotNum is the number at the end of a slot id ("web-12" -> 12).
func slotNum(id string) int {
	n, _ := strconv.Atoi(id[strings.LastIndexByte(id, '-')+1:])
	return n
}

// trackGiveUp arms the exit_on_failure timer while no worker is in rotation
// and disarms it as soon as one is.
func (a *App) trackGiveUp(ready bool) {
	limit := a.spec.ExitOnFailure
	if ready || limit <= 0 || a.stopping || a.gaveUp {
		if a.giveUpTimer != nil {
			a.giveUpTimer.Stop()
			a.giveUpTimer = nil
		}
		return
	}
	if a.giveUpTimer != nil {
		return
	}
	var t *time.Timer
	t = a.after(limit, func() {
		if a.giveUpTimer != t || a.stopping {
			return // disarmed since
		}
		a.giveUpTimer = nil
		a.gaveUp = true
		err := fmt.Errorf("app %s had no ready worker for %s", a.name, limit)
		a.log.Error("giving up", "error", err)
		if a.opts.OnGiveUp != nil {
			// Its own goroutine, untracked: the callback may well call Stop,
			// which waits for the app's goroutines.
			go a.opts.OnGiveUp(a.name, err)
		}
		a.publishStatus()
	})
	a.giveUpTimer = t
}
