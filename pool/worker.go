package pool

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/health"
)

const (
	// pollInterval is how often drain and stop waits look at their condition.
	pollInterval = 10 * time.Millisecond
	// killGrace bounds the wait for a SIGKILLed process group to vanish.
	killGrace = 2 * time.Second
	// logGrace is how long a finished worker's output pipes stay open for
	// its last lines when something outside the group still holds them.
	logGrace = 500 * time.Millisecond
	// quickWindow is the window backoff.quick_restarts counts in.
	quickWindow = time.Minute
)

// slot is one stable worker position ("web-1"). It outlives the processes
// that fill it, keeps its counters and decides restart backoff.
type slot struct {
	id    string
	num   int
	stats *WorkerStats
	spec  *config.App // process settings its restarts use (changed by rolls)
	gen   int
	cur   *worker // the worker filling the slot; nil while in backoff
	cpu   cpuAccount

	removed      bool // scaled down
	delay        time.Duration
	restartTimer *time.Timer
	restartAt    time.Time   // when restartTimer fires
	quick        []time.Time // restarts at once within the last minute
	served       bool        // its last process had been in rotation
	reason       string      // why it is in backoff
	cause        string      // restart cause of the pending restart
	lastExit     string      // how its last failed process ended
}

// takeQuick reports whether s may restart at once now, at most limit times
// a minute, and counts the restart when it may.
func (s *slot) takeQuick(now time.Time, limit int) bool {
	s.quick = slices.DeleteFunc(s.quick, func(t time.Time) bool { return now.Sub(t) >= quickWindow })
	if len(s.quick) >= limit {
		return false
	}
	s.quick = append(s.quick, now)
	return true
}

func (s *slot) cancelRestart() {
	if s.restartTimer != nil {
		s.restartTimer.Stop()
		s.restartTimer = nil
	}
}

// countRestart counts a restart of s after a failure, and its cause.
func (s *slot) countRestart() {
	s.stats.AddRestart()
	s.stats.AddReplacement(s.cause)
}

// worker is one process of a slot, owned by the supervisor except for the
// fields documented otherwise.
type worker struct {
	slot  *slot
	gen   int
	addr  listenAddr
	proc  *process
	log   hclog.Logger
	state string
	// reason says why the worker is in its state (unhealthy, draining...).
	reason    string
	startedAt time.Time
	readyAt   time.Time
	// inRotation is the time spent ready before readySince, which is set
	// while the worker is ready: time unhealthy is not time served.
	inRotation     time.Duration
	readySince     time.Time
	unhealthySince time.Time

	backend        *Backend
	probe          *health.Probe
	stopProbe      context.CancelFunc
	readyTimer     *time.Timer
	unhealthyTimer *time.Timer

	// Recycling: the slot's request count when w entered rotation, and
	// w's jittered thresholds (drawn at the first recycle round, 0 = not yet).
	requestsBase uint64
	maxRequests  int64
	maxAge       time.Duration

	// memBytes is the RSS of the worker's process group at the last
	// sampling round; status reads it.
	memBytes atomic.Int64

	candidate  bool // started by a roll, not yet promoted
	stopping   bool // on its way out; its exit is not a crash
	stopAt     time.Time
	crashed    bool   // exited without being asked to
	exited     bool   // the leader's exit was handled
	finished   bool   // process group gone, port released
	failReason string // why the supervisor killed it, if it did
	then       func() // run on the supervisor once the worker finished

	// exitedCh is closed by the exit watcher after it stored exitStatus.
	exitedCh   chan struct{}
	exitStatus syscall.WaitStatus
}

// servedFor is how long w has been in rotation (ready) up to now.
func (w *worker) servedFor(now time.Time) time.Duration {
	d := w.inRotation
	if !w.readySince.IsZero() {
		d += now.Sub(w.readySince)
	}
	return d
}

// gone reports whether the leader has exited and its whole tree is gone:
// its group, and (the shim has ended) anything that left the group.
func (w *worker) gone() bool {
	select {
	case <-w.exitedCh:
	default:
		return false
	}
	select {
	case <-w.proc.shimDone:
		return groupGone(w.proc.pid)
	default:
		return false
	}
}

func (w *worker) stopTimers() {
	if w.readyTimer != nil {
		w.readyTimer.Stop()
	}
	if w.unhealthyTimer != nil {
		w.unhealthyTimer.Stop()
	}
	if w.stopProbe != nil {
		w.stopProbe()
	}
}

// workerObserver is the health.Observer of one worker process. It is per
// process, not per slot id, because during a roll two processes share an id.
type workerObserver struct {
	a *App
	w *worker
}

// HealthChanged forwards t to the supervisor.
func (o workerObserver) HealthChanged(t health.Transition) {
	o.a.post(func() { o.a.onHealth(o.w, t) })
}

// newSlot creates slot number n, continuing the counters of an earlier slot
// with the same id.
func (a *App) newSlot(n int) *slot {
	id := a.name + "-" + strconv.Itoa(n)
	all := *a.slotStats.Load()
	st, ok := all[id]
	if !ok {
		st = &WorkerStats{}
		next := make(map[string]*WorkerStats, len(all)+1)
		for k, v := range all {
			next[k] = v
		}
		next[id] = st
		a.slotStats.Store(&next)
	}
	s := &slot{id: id, num: n, stats: st, spec: a.spec, gen: a.gen}
	a.slots[id] = s
	return s
}

// spawn starts a process for s from spec's process settings.
func (a *App) spawn(s *slot, spec *config.App, gen int, candidate bool) (*worker, error) {
	addr, err := a.takeAddr(s, spec)
	if err != nil {
		return nil, fmt.Errorf("starting worker %s: %w", s.id, err)
	}
	cmd, err := buildCommand(spec, s.id, addr)
	if err != nil {
		a.releaseAddr(addr)
		return nil, fmt.Errorf("starting worker %s: %w", s.id, err)
	}
	log := a.log.With("worker", s.id)
	proc, err := startProcess(a.opts.Reaper, cmd, log, newOutputLimit(s.stats, a.spec.Output), &a.wg)
	if err != nil {
		a.releaseAddr(addr)
		return nil, fmt.Errorf("starting worker %s: %w", s.id, err)
	}
	w := &worker{
		slot: s, gen: gen, addr: addr, proc: proc, log: log.With("pid", proc.pid),
		state: StateStarting, startedAt: time.Now(), candidate: candidate,
		exitedCh: make(chan struct{}),
	}
	a.workers[w] = struct{}{}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.exitStatus = <-proc.exited
		close(w.exitedCh)
		a.post(func() { a.onExit(w) })
	}()

	if spec.Background {
		// A background worker has no port to probe: it is ready once it has
		// stayed up for settle_time (supervisord's startsecs).
		settle := spec.SettleTime
		w.readyTimer = a.after(settle, func() {
			if w.state == StateStarting && !w.stopping && !w.exited {
				a.markReady(w)
				a.publish()
			}
		})
		w.log.Info("worker started", "generation", gen, "settle_time", settle)
		return w, nil
	}
	w.probe = health.NewProbe(a.spec.Health, s.id, addr.dial(), workerObserver{a, w}, a.root)
	ctx, cancel := context.WithCancel(a.ctx)
	w.stopProbe = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		w.probe.Run(ctx)
	}()
	timeout := a.startTimeout()
	w.readyTimer = a.after(timeout, func() { a.notReady(w, timeout) })
	if addr.socket != "" {
		w.log.Info("worker started", "socket", addr.socket, "generation", gen)
	} else {
		w.log.Info("worker started", "port", addr.port, "generation", gen)
	}
	return w, nil
}

// fill starts a worker for a slot that has none; a failure goes to backoff.
func (a *App) fill(s *slot) {
	w, err := a.spawn(s, s.spec, s.gen, false)
	if err != nil {
		a.log.Error("cannot start worker", "worker", s.id, "error", err)
		a.scheduleRestart(s, err.Error(), nil)
		return
	}
	s.cur = w
}

// scheduleRestart restarts s after its worker w (nil when it never
// started) failed: at once when w had served (was in rotation for
// backoff.min_uptime), at most backoff.quick_restarts times a minute;
// otherwise after the slot's backoff delay.
func (a *App) scheduleRestart(s *slot, reason string, w *worker) {
	if a.stopping || s.removed {
		return
	}
	b := a.spec.Backoff
	lo, hi := orDefault(b.Min, defaultBackoffMin), orDefault(b.Max, defaultBackoffMax)
	now := time.Now()
	s.served = w != nil && !w.readyAt.IsZero()
	var served time.Duration
	if s.served {
		served = w.servedFor(now)
	}
	if s.served && served >= b.ResetAfter {
		s.delay = 0 // it was healthy long enough: this is a fresh failure
	}
	s.reason = reason
	s.cause = CauseCrash
	if w != nil && w.failReason != "" {
		s.cause = CauseHealth // the supervisor killed it: not ready or unhealthy
	}
	s.cancelRestart()
	if s.served && served >= b.MinUptime && s.takeQuick(now, b.QuickRestarts) {
		// It started and served: a restart now keeps the app's capacity,
		// and the failure is not one a delay would cure.
		a.log.Info("restarting worker at once", "worker", s.id, "reason", reason)
		s.countRestart()
		a.fill(s)
		return
	}
	d := max(s.delay, lo)
	s.delay = min(2*d, hi)
	d = min(time.Duration(float64(min(d, hi))*(0.8+0.4*rand.Float64())), hi)
	a.armRestart(s, d)
	a.log.Warn("worker in backoff", "worker", s.id, "reason", reason, "delay", d.Round(time.Millisecond))
}

// armRestart (re)starts s's restart timer to fire after d.
func (a *App) armRestart(s *slot, d time.Duration) {
	s.cancelRestart()
	var t *time.Timer
	t = a.after(d, func() {
		if s.restartTimer != t {
			return // cancelled since
		}
		s.restartTimer = nil
		if a.stopping || s.removed || s.cur != nil {
			return
		}
		s.countRestart()
		a.fill(s)
		a.publish()
	})
	s.restartTimer, s.restartAt = t, time.Now().Add(d)
}

// rescue keeps an app with no worker in rotation from sitting out long
// backoffs: unless a worker is already starting, the slot due soonest whose
// last process had served restarts within backoff.min. A slot whose workers
// never got ready is left to its backoff, so a broken command still backs
// off.
func (a *App) rescue() {
	if a.stopping {
		return
	}
	for w := range a.workers {
		if w.state == StateStarting && !w.stopping && !w.exited && !w.candidate {
			return
		}
	}
	var next *slot
	for _, s := range a.slots {
		if s.restartTimer != nil && s.served && (next == nil || s.restartAt.Before(next.restartAt)) {
			next = s
		}
	}
	lo := orDefault(a.spec.Backoff.Min, defaultBackoffMin)
	if next == nil || time.Until(next.restartAt) <= lo {
		return
	}
	a.log.Info("no worker in rotation, restarting sooner", "worker", next.id, "delay", lo)
	a.armRestart(next, lo)
}

// orDefault returns d, or def when d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// onExit handles the exit of w's leader process.
func (a *App) onExit(w *worker) {
	if w.exited {
		return
	}
	w.exited = true
	w.stopTimers()
	exit := describeExit(w.exitStatus)
	if w.stopping {
		// A stop we asked for: the slot's last exit stays the last failure.
		w.log.Debug("worker exited", "status", exit)
		a.publish()
		return
	}
	w.slot.lastExit = exit
	w.crashed = true
	// A crash, or the supervisor killed it (not ready, unhealthy too long).
	reason := w.failReason
	if reason == "" {
		reason = "exited: " + exit
	}
	w.log.Warn("worker exited", "status", exit, "reason", reason)
	a.beginStop(w, reason, false, syscall.SIGKILL, killGrace)
	if w.candidate {
		a.abortRoll(fmt.Errorf("worker %s %s", w.slot.id, reason))
		a.publish()
		return
	}
	if s := w.slot; s.cur == w {
		s.cur = nil
		a.scheduleRestart(s, reason, w)
	}
	a.publish()
}

// onHealth applies a health transition of w.
func (a *App) onHealth(w *worker, t health.Transition) {
	if w.stopping || w.exited {
		return
	}
	switch {
	case t.Healthy && w.state == StateStarting:
		a.markReady(w)
	case t.Healthy && w.state == StateUnhealthy:
		w.state, w.reason = StateReady, ""
		w.readySince, w.unhealthySince = time.Now(), time.Time{}
		if w.unhealthyTimer != nil {
			w.unhealthyTimer.Stop()
			w.unhealthyTimer = nil
		}
		w.log.Info("worker back in rotation")
	case !t.Healthy && w.state == StateReady:
		now := time.Now()
		w.state, w.reason = StateUnhealthy, t.Reason
		w.inRotation, w.readySince, w.unhealthySince = w.servedFor(now), time.Time{}, now
		w.log.Warn("worker out of rotation", "reason", t.Reason)
		a.armUnhealthy(w)
	default:
		return
	}
	a.publish()
}

// armUnhealthy (re)arms the restart of unhealthy w for the current
// health.restart_after, counted from when it became unhealthy; a value of 0
// disarms it.
func (a *App) armUnhealthy(w *worker) {
	if w.unhealthyTimer != nil {
		w.unhealthyTimer.Stop()
		w.unhealthyTimer = nil
	}
	h := a.spec.Health
	if h == nil || h.RestartAfter <= 0 || w.state != StateUnhealthy {
		return
	}
	after := h.RestartAfter
	var timer *time.Timer
	timer = a.after(time.Until(w.unhealthySince.Add(after)), func() {
		if w.unhealthyTimer == timer && w.state == StateUnhealthy {
			a.kill(w, fmt.Sprintf("unhealthy for %s", after))
		}
	})
	w.unhealthyTimer = timer
}

// markReady puts w into rotation.
func (a *App) markReady(w *worker) {
	if w.readyTimer != nil {
		w.readyTimer.Stop()
	}
	w.state, w.reason, w.readyAt = StateReady, "", time.Now()
	w.readySince = w.readyAt
	w.requestsBase = w.slot.stats.Requests.Load()
	if w.addr.none() {
		// A background worker: ready, but nothing to route to.
		w.log.Info("worker ready", "startup", w.readyAt.Sub(w.startedAt).Round(time.Millisecond))
		if w.candidate {
			a.promote(w)
		}
		return
	}
	b := &Backend{ID: w.slot.id, Addr: w.addr.dial(), Port: w.addr.port, Socket: w.addr.socket, Stats: w.slot.stats}
	if a.opts.NewUpstream != nil {
		b.Upstream = a.opts.NewUpstream(b.Addr, a.spec)
	}
	w.backend = b
	w.log.Info("worker ready", "startup", w.readyAt.Sub(w.startedAt).Round(time.Millisecond))
	if w.candidate {
		a.promote(w)
	}
}

// notReady kills w when it is still starting after the start timeout.
func (a *App) notReady(w *worker, timeout time.Duration) {
	if w.state == StateStarting {
		a.kill(w, fmt.Sprintf("not ready after %s", timeout))
	}
}

// kill SIGKILLs w's process group; its exit then goes the crash way, with
// reason as the cause.
func (a *App) kill(w *worker, reason string) {
	if w.stopping || w.exited {
		return
	}
	w.failReason = reason
	w.log.Warn("killing worker", "reason", reason)
	if err := signalGroup(w.proc.pid, syscall.SIGKILL); err != nil {
		w.log.Error("cannot kill worker", "error", err)
	}
}

// stopWorker takes w out of rotation and stops it: drain first (when drain
// is set and it was in rotation), then its stop signal, then SIGKILL. then,
// if not nil, runs on the supervisor once w is gone. reason shows in status.
func (a *App) stopWorker(w *worker, reason string, drain bool, then func()) {
	if w.stopping {
		if then != nil {
			prev := w.then
			w.then = func() {
				if prev != nil {
					prev()
				}
				then()
			}
		}
		return
	}
	w.then = then
	a.beginStop(w, reason, drain, a.stopSignal(), a.stopTimeout())
	a.publish()
}

// beginStop marks w as stopping and starts the goroutine that ends it.
func (a *App) beginStop(w *worker, reason string, drain bool, sig syscall.Signal, timeout time.Duration) {
	w.stopping, w.stopAt = true, time.Now()
	w.stopTimers()
	if w.backend != nil {
		w.backend.Draining.Store(true)
	}
	if drain && w.backend != nil && !w.exited {
		w.state, w.reason = StateDraining, reason
	} else if !w.exited {
		w.state, w.reason = StateStopping, reason
	}
	var drainFor time.Duration
	if drain {
		drainFor = a.drainTimeout()
	}
	a.wg.Add(1)
	go a.terminate(w, drainFor, sig, timeout)
}

// terminate ends w's process group: it waits up to drainFor for w's
// requests in flight, then sends sig and gives the group timeout (plus
// killGrace after SIGKILL) to go, and reports back with finish. The stop
// grace starts with the signal, so a long drain never eats it. It runs on
// its own goroutine.
func (a *App) terminate(w *worker, drainFor time.Duration, sig syscall.Signal, timeout time.Duration) {
	defer a.wg.Done()
	drain := drainFor > 0
	deadline := time.Now().Add(drainFor)
	if b := w.backend; b != nil {
		if b.Upstream != nil {
			// Idle keep-alive connections carry no request: close them now
			// so nothing new is sent on them while the rest drains.
			b.Upstream.CloseIdle()
		}
		if drain && !a.waitUntil(deadline, func() bool { return b.Inflight.Load() <= 0 }) {
			w.log.Warn("drain deadline passed", "inflight", b.Inflight.Load())
		}
		if b.Upstream != nil {
			b.Upstream.CloseIdle()
		}
		a.post(func() {
			if !w.exited {
				w.state = StateStopping
				a.publishStatus()
			}
		})
	}
	pgid := w.proc.pid
	if err := signalGroup(pgid, sig); err != nil {
		w.log.Error("cannot signal worker", "error", err)
	}
	if !a.waitUntil(time.Now().Add(timeout), w.gone) {
		if sig != syscall.SIGKILL {
			w.log.Warn("worker did not stop in time, killing", "timeout", timeout)
		}
		_ = signalGroup(pgid, syscall.SIGKILL)
		if !waitFor(time.Now().Add(killGrace), nil, w.gone) {
			w.log.Error("process group still present after kill", "pgid", pgid)
		}
	}
	a.post(func() { a.finish(w) })
}

// waitUntil polls cond until it holds (true), deadline passes or Stop's
// context ended (false).
func (a *App) waitUntil(deadline time.Time, cond func() bool) bool {
	return waitFor(deadline, a.hurry, cond)
}

func waitFor(deadline time.Time, abort <-chan struct{}, cond func() bool) bool {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for !cond() {
		if !time.Now().Before(deadline) {
			return false
		}
		select {
		case <-t.C:
		case <-abort:
			return cond()
		}
	}
	return true
}

// finish releases what w held once its process group is gone.
func (a *App) finish(w *worker) {
	if w.finished {
		return
	}
	w.finished = true
	delete(a.workers, w)
	a.releaseAddr(w.addr)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTimer(logGrace)
		defer t.Stop()
		select {
		case <-w.proc.logsDone:
		case <-t.C:
		}
		w.proc.closeLogs()
	}()
	if w.crashed {
		w.log.Debug("process group gone")
	} else {
		w.log.Info("worker stopped", "reason", w.reason, "took", time.Since(w.stopAt).Round(time.Millisecond))
	}
	if w.then != nil {
		w.then()
	}
	a.publish()
}
