// Package pool supervises each app's worker processes: it starts them on
// private loopback ports, reaps them, restarts crashed ones with backoff,
// replaces them in rolling restarts and publishes an immutable routing table
// of the workers in rotation for the proxy.
//
// Shape: one supervisor goroutine per App owns every worker, slot, timer and
// port of the app. Everything else (API calls, process exits from the
// Reaper, health transitions, timers, the dev-mode watcher) sends it a
// command. Long waits (draining, stopping a process group) run on goroutines
// the App tracks and report back with a command, so the supervisor never
// blocks. Readers get immutable snapshots through atomic pointers: the
// routing table for the proxy, the status for /status.
//
// Order of shutdown: stop every App before cancelling the Reaper's Run. The
// Reaper delivers the exits Stop waits for, and when Run returns its locked
// OS thread exits, which signals (Pdeathsig) every worker shim still alive;
// each kills its worker's whole tree (see shim.go).
//
// The Reaper waits for every child of the process (wait4(-1)): nothing else
// in corral may start a child with os/exec and Wait for it.
package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
)

// ErrStopped is returned by calls on an App that has been stopped.
var ErrStopped = errors.New("app stopped")

// ErrNotStarted is returned by Restart on an App whose Start was not called.
var ErrNotStarted = errors.New("app not started")

// ErrUnknownWorker is returned (wrapped) by RestartWorker for an id that is
// not a slot of the app.
var ErrUnknownWorker = errors.New("unknown worker")

// MaxInstances bounds a runtime scale, as config bounds instances.
const MaxInstances = 256

// Defaults for pool settings a spec leaves zero (config normally fills them).
const (
	defaultDrainTimeout = 30 * time.Second
	defaultStopTimeout  = 30 * time.Second
	defaultStartTimeout = 60 * time.Second
	defaultBackoffMin   = 100 * time.Millisecond
	defaultBackoffMax   = 30 * time.Second
)

// Options are what an App needs besides its spec.
type Options struct {
	Logger      hclog.Logger                                 // root or "pool"-named; the app adds .Named("pool").With("app", name)
	Ports       *Ports                                       // shared by all apps
	Reaper      *Reaper                                      // shared by all apps
	NewUpstream func(addr string, spec *config.App) Upstream // may be nil (tests); called once per Backend
	OnGiveUp    func(app string, err error)                  // exit_on_failure fired (may be nil); called once, on its own goroutine

	// Sockets hands out the socket paths of apps with {socket} in their
	// command, shared by all apps; without it such apps cannot start.
	Sockets *Sockets

	// SampleInterval is how often the workers' memory and CPU are read
	// from /proc (see procstat.go); 0 means every 2 s.
	SampleInterval time.Duration
}

// App supervises the workers of one configured app. One supervisor
// goroutine owns all of its mutable state; every method sends it a command.
type App struct {
	name  string
	log   hclog.Logger // "pool", app=name
	root  hclog.Logger // handed to health probes, which name themselves
	opts  Options
	stats *AppStats

	table     atomic.Pointer[Table]
	status    atomic.Pointer[statusView]
	slotStats atomic.Pointer[map[string]*WorkerStats] // copy-on-write

	cmds    chan func()
	done    chan struct{} // closed when the supervisor goroutine returns
	hurry   chan struct{} // closed when Stop's ctx ended: stop waiting, kill
	wg      sync.WaitGroup
	started atomic.Bool

	startOnce sync.Once
	stopOnce  sync.Once
	hurryOnce sync.Once

	// Everything below is owned by the supervisor goroutine.
	spec     *config.App
	ctx      context.Context // ends probes and the watcher when the supervisor ends
	cancel   context.CancelFunc
	slots    map[string]*slot
	workers  map[*worker]struct{} // every process not yet finished
	gen      int
	version  uint64
	roll     *roll
	lastRoll RollStatus
	scaled   int // runtime instances (Scale) until the next Update; 0 = none
	ready    int // workers ready: in rotation, or (background) up for settle_time
	// recycleTimer is the next recycle round; memReading is set while a
	// round reads memory off the supervisor.
	recycleTimer *time.Timer
	memReading   bool
	// sampleTimer is the next process sampling round; sampling is set
	// while one reads /proc off the supervisor.
	sampleTimer *time.Timer
	sampling    bool
	auto        autoscaler
	stopping    bool
	giveUpTimer *time.Timer
	gaveUp      bool
	stopWatch   context.CancelFunc
}

// New returns the supervisor of spec's app; nothing runs until Start.
func New(spec *config.App, opts Options) *App {
	root := opts.Logger
	if root == nil {
		root = hclog.NewNullLogger()
	}
	log := root
	if !strings.HasSuffix(root.Name(), "pool") {
		log = root.Named("pool")
	}
	a := &App{
		name:    spec.Name,
		log:     log.With("app", spec.Name),
		root:    root.With("app", spec.Name),
		opts:    opts,
		stats:   &AppStats{},
		cmds:    make(chan func(), 64),
		done:    make(chan struct{}),
		hurry:   make(chan struct{}),
		spec:    spec,
		slots:   make(map[string]*slot),
		workers: make(map[*worker]struct{}),
		gen:     1,
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.table.Store(&Table{App: spec, Stats: a.stats, Version: 0})
	a.slotStats.Store(&map[string]*WorkerStats{})
	a.publishStatus()
	return a
}

// Name returns the app's name.
func (a *App) Name() string { return a.name }

// Start starts the supervisor goroutine and the app's workers. Calling it
// again does nothing.
func (a *App) Start() {
	a.startOnce.Do(func() {
		a.started.Store(true)
		go a.supervise()
		a.post(func() {
			a.reconcile()
			a.startWatcher()
			a.armRecycle()
			a.armAutoscale()
			a.armSample()
			a.publish()
		})
	})
}

// Table returns the app's current routing table; it is never nil.
func (a *App) Table() *Table { return a.table.Load() }

// Ready reports whether at least one worker is ready: in rotation, or for
// a background app, up for its settle_time.
func (a *App) Ready() bool { return a.status.Load().st.Ready > 0 }

// Stats returns the app's counters and a fresh map of every slot's counters
// ever created, scaled-down slots included.
func (a *App) Stats() (*AppStats, map[string]*WorkerStats) {
	return a.stats, maps.Clone(*a.slotStats.Load())
}

// Update applies a new spec for this app: settings in place, scaling, and a
// rolling restart when the process settings changed. It returns once the
// supervisor has taken the spec (the roll continues in the background).
func (a *App) Update(spec *config.App) {
	if !a.started.Load() {
		a.log.Warn("update before start ignored")
		return
	}
	applied := make(chan struct{})
	if a.post(func() { a.update(spec); close(applied) }) {
		select {
		case <-applied:
		case <-a.done:
		}
	}
}

// Restart does a zero-downtime rolling restart of every worker and returns
// when it is done (nil), failed (the error says why) or ctx ended. A Restart
// while a roll runs is coalesced: one more roll runs after the current one.
func (a *App) Restart(ctx context.Context) error {
	if !a.started.Load() {
		return ErrNotStarted
	}
	result := make(chan error, 1)
	if !a.post(func() { a.startRoll("restart requested", CauseManual, result) }) {
		return ErrStopped
	}
	select {
	case err := <-result:
		return err
	case <-a.done:
		return ErrStopped
	case <-ctx.Done():
		return fmt.Errorf("waiting for rolling restart of %s: %w", a.name, ctx.Err())
	}
}

// Stop drains and stops every worker, then ends the supervisor. When ctx
// ends first, the remaining process groups are killed. It returns after
// every process group is gone and no goroutine of the app is left; calling
// it again waits for the same.
func (a *App) Stop(ctx context.Context) error {
	if !a.started.Load() {
		a.startOnce.Do(func() { close(a.done) })
		return nil
	}
	a.stopOnce.Do(func() { a.post(a.shutdown) })
	var err error
	select {
	case <-a.done:
	case <-ctx.Done():
		err = fmt.Errorf("stopping app %s: %w", a.name, ctx.Err())
		a.hurryOnce.Do(func() { close(a.hurry) })
		a.post(a.killAll)
		<-a.done
	}
	a.wg.Wait()
	return err
}

// post hands f to the supervisor; false when the supervisor has ended.
func (a *App) post(f func()) bool {
	// Checked first: with room in the buffer, the select below could pick
	// the send even though the supervisor has ended.
	select {
	case <-a.done:
		return false
	default:
	}
	select {
	case a.cmds <- f:
		return true
	case <-a.done:
		return false
	}
}

// after runs f on the supervisor after d.
func (a *App) after(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() { a.post(f) })
}

// supervise is the supervisor goroutine: it runs commands one at a time
// until a stop has finished every worker.
func (a *App) supervise() {
	defer close(a.done)
	defer a.cancel()
	for f := range a.cmds {
		f()
		if a.stopping && len(a.workers) == 0 {
			a.final()
			return
		}
	}
}

// shutdown begins Stop: no more restarts, rolls or scaling; every worker
// drains and stops concurrently.
func (a *App) shutdown() {
	a.log.Info("stopping app")
	a.stopping = true
	if a.roll != nil {
		a.abortRoll(ErrStopped)
	}
	if a.stopWatch != nil {
		a.stopWatch()
		a.stopWatch = nil
	}
	if a.giveUpTimer != nil {
		a.giveUpTimer.Stop()
	}
	if a.recycleTimer != nil {
		a.recycleTimer.Stop()
		a.recycleTimer = nil
	}
	if a.sampleTimer != nil {
		a.sampleTimer.Stop()
		a.sampleTimer = nil
	}
	if a.auto.timer != nil {
		a.auto.timer.Stop()
		a.auto.timer = nil
	}
	for _, s := range a.slots {
		s.cancelRestart()
	}
	for w := range a.workers {
		a.stopWorker(w, "app stopping", true, nil)
	}
}

// killAll kills every remaining process group at once (Stop's ctx ended).
func (a *App) killAll() {
	for w := range a.workers {
		if err := signalGroup(w.proc.pid, syscall.SIGKILL); err != nil {
			a.log.Warn("cannot kill worker", "worker", w.slot.id, "error", err)
		}
	}
}

// final runs once on the supervisor after the last worker finished.
func (a *App) final() {
	a.slots = map[string]*slot{}
	a.publish()
	a.log.Info("app stopped")
}

// RestartWorker replaces the worker of slot id the zero-downtime way (a
// roll of that one slot: the new worker ready first, then the old one out
// of rotation, drained and stopped) and returns when it is done, failed or
// ctx ended. Asked while a roll runs, it runs after that roll.
func (a *App) RestartWorker(ctx context.Context, id string) error {
	if !a.started.Load() {
		return ErrNotStarted
	}
	result := make(chan error, 1)
	if !a.post(func() {
		if _, ok := a.slots[id]; !ok {
			result <- fmt.Errorf("restarting %s: %w", id, ErrUnknownWorker)
			return
		}
		a.ask(&rollAsk{reason: "restart of " + id + " requested", cause: CauseManual,
			only: map[string]bool{id: true}, waiters: []chan<- error{result}})
	}) {
		return ErrStopped
	}
	select {
	case err := <-result:
		return err
	case <-a.done:
		return ErrStopped
	case <-ctx.Done():
		return fmt.Errorf("waiting for restart of %s: %w", id, ctx.Err())
	}
}

// Scale sets the app's instances to n at runtime, until the next Update
// (a reload) or ResetScale. New workers start at once; surplus workers
// drain and stop from the highest slot down; a scale asked during a roll
// applies when the roll ends. It returns the instances before. With
// autoscale on, n must be within its bounds (else ErrOutOfBounds) and
// autoscaling goes on from n.
func (a *App) Scale(n int) (int, error) {
	if n < 1 || n > MaxInstances {
		return 0, fmt.Errorf("scaling %s to %d: instances must be in 1..%d", a.name, n, MaxInstances)
	}
	if !a.started.Load() {
		return 0, ErrNotStarted
	}
	type answer struct {
		prev int
		err  error
	}
	res := make(chan answer, 1)
	if !a.post(func() {
		if as := a.spec.Autoscale; as != nil {
			if n < as.Min || n > as.Max {
				res <- answer{err: fmt.Errorf("scaling %s to %d: %w: autoscale keeps it within %d..%d", a.name, n, ErrOutOfBounds, as.Min, as.Max)}
				return
			}
			a.auto.lastAt = time.Now()
			a.auto.restart()
		}
		res <- answer{prev: a.instances()}
		a.scaled = n
		a.log.Info("scaled at runtime", "instances", n)
		a.reconcile()
	}) {
		return 0, ErrStopped
	}
	select {
	case r := <-res:
		return r.prev, r.err
	case <-a.done:
		return 0, ErrStopped
	}
}

// ResetScale drops a runtime scale: the app goes back to its spec's
// instances. A reload calls it for the apps it does not otherwise change.
// An autoscaled app keeps its count: autoscaling owns it.
func (a *App) ResetScale() {
	if !a.started.Load() {
		return
	}
	applied := make(chan struct{})
	if a.post(func() {
		if a.scaled != 0 && a.spec.Autoscale == nil {
			a.scaled = 0
			a.log.Info("runtime scale dropped", "instances", a.spec.Instances)
			a.reconcile()
		}
		close(applied)
	}) {
		select {
		case <-applied:
		case <-a.done:
		}
	}
}

// instances is how many workers the app should have now.
func (a *App) instances() int {
	if a.scaled > 0 {
		return a.scaled
	}
	return a.spec.Instances
}

// update applies spec on the supervisor. A runtime scale ends here: the
// file's instances apply again, except with autoscale, which keeps the
// count it has, within the new bounds.
func (a *App) update(spec *config.App) {
	old, cur := a.spec, a.instances()
	a.spec = spec
	a.clampScale(cur)
	for w := range a.workers {
		if w.probe != nil {
			w.probe.SetSpec(spec.Health)
		}
		if w.state == StateUnhealthy && !w.stopping && !w.exited {
			a.armUnhealthy(w)
		}
	}
	if !slices.Equal(old.Watch, spec.Watch) || old.WatchDebounce != spec.WatchDebounce {
		a.startWatcher()
	}
	if old.Recycle != spec.Recycle {
		// New limits apply to every worker: thresholds are drawn again.
		for w := range a.workers {
			w.maxRequests, w.maxAge = 0, 0
		}
		a.armRecycle()
	}
	if !autoscaleEqual(old.Autoscale, spec.Autoscale) {
		a.armAutoscale()
	}
	if old.Output != spec.Output {
		for w := range a.workers {
			w.proc.output.setBounds(spec.Output)
		}
	}
	if !processEqual(old, spec) {
		a.startRoll("config changed", CauseReload)
	}
	a.reconcile()
	a.publish()
}

// processEqual reports whether a and b start the same processes: a
// difference in command, dir, env, user or group needs a rolling restart.
func processEqual(a, b *config.App) bool {
	return slices.Equal(a.Command, b.Command) && a.Dir == b.Dir &&
		maps.Equal(a.Env, b.Env) && a.User == b.User && a.Group == b.Group
}

// autoscaleEqual reports whether x and y are the same autoscale settings.
func autoscaleEqual(x, y *config.Autoscale) bool {
	return (x == nil && y == nil) || (x != nil && y != nil && *x == *y)
}

func (a *App) stopTimeout() time.Duration {
	if a.spec.StopTimeout > 0 {
		return a.spec.StopTimeout
	}
	return defaultStopTimeout
}

func (a *App) drainTimeout() time.Duration {
	if a.spec.DrainTimeout > 0 {
		return a.spec.DrainTimeout
	}
	return defaultDrainTimeout
}

func (a *App) startTimeout() time.Duration {
	if a.spec.StartTimeout > 0 {
		return a.spec.StartTimeout
	}
	return defaultStartTimeout
}

func (a *App) stopSignal() syscall.Signal {
	if a.spec.StopSignal != 0 {
		return a.spec.StopSignal
	}
	return syscall.SIGTERM
}

// Alive reports whether the supervisor goroutine still answers commands:
// it sends a no-op and waits for it to run until ctx ends. A wedged
// supervisor (a command that never returns) fails it; /healthz uses it as
// the app's heartbeat. A stopped or never-started app answers nil.
func (a *App) Alive(ctx context.Context) error {
	if !a.started.Load() {
		return nil
	}
	ran := make(chan struct{})
	select {
	case a.cmds <- func() { close(ran) }:
	case <-a.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervisor of app %s does not take commands: %w", a.name, ctx.Err())
	}
	select {
	case <-ran:
		return nil
	case <-a.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("supervisor of app %s does not answer: %w", a.name, ctx.Err())
	}
}
