package health

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
)

// StartInterval is how often a worker is probed until it first passes, so a
// new worker enters rotation soon after it can answer. A spec interval that
// is shorter wins. NewProbe reads it once.
var StartInterval = 100 * time.Millisecond

// Defaults used when the app has no health block or leaves a setting zero.
const (
	// DefaultInterval is the time between probes of a started worker.
	DefaultInterval = 2 * time.Second
	// DefaultTimeout bounds one probe.
	DefaultTimeout = 1 * time.Second
	// DefaultHealthyThreshold is the consecutive passes that turn a worker healthy again.
	DefaultHealthyThreshold = 1
	// DefaultUnhealthyThreshold is the consecutive failures that turn a worker unhealthy.
	DefaultUnhealthyThreshold = 3
)

// Probe types, as in config.Health.Type.
const (
	// TypeHTTP probes with an HTTP GET of the health path.
	TypeHTTP = "http"
	// TypeTCP probes by connecting and closing at once.
	TypeTCP = "tcp"
)

// jitterFraction is how far each normal interval may stray from the
// configured one, so probes of many workers do not fall into lockstep.
const jitterFraction = 0.1

// Probe checks one worker periodically and reports health transitions.
type Probe struct {
	worker        string
	addr          string
	obs           Observer
	log           hclog.Logger
	startInterval time.Duration
	transport     *http.Transport
	client        *http.Client

	// respec wakes Run when SetSpec changed the interval.
	respec chan struct{}

	// reportMu orders the update of the state with its report, so
	// concurrent Steps deliver flips to the observer in the order they
	// happened. It is held while the observer runs; mu is not, so Stats
	// stays callable from the observer's side.
	reportMu sync.Mutex

	mu     sync.Mutex // guards the fields below
	spec   config.Health
	passed bool // the worker has passed at least once (starting phase over)
	// shortageLogged is when a skipped probe was last logged.
	shortageLogged time.Time
	stats          Stats
}

// NewProbe returns a probe of the worker listening on addr ("127.0.0.1:20001",
// or the absolute path of its Unix socket).
// spec may be nil: then it is a TCP connect probe with the default interval,
// timeout and thresholds. The probe does nothing until Run or Step is called.
func NewProbe(spec *config.Health, worker, addr string, obs Observer, log hclog.Logger) *Probe {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t := newTransport(addr)
	p := &Probe{
		worker:        worker,
		addr:          addr,
		obs:           obs,
		log:           log.Named("health").With("worker", worker),
		startInterval: StartInterval,
		transport:     t,
		client:        newClient(t),
		respec:        make(chan struct{}, 1),
		spec:          normalize(spec),
	}
	return p
}

// normalize returns a copy of spec with every zero setting defaulted, so a
// later change to the caller's value cannot race with the probe.
func normalize(spec *config.Health) config.Health {
	var s config.Health
	if spec != nil {
		s = *spec
		s.ExpectStatus = append([]int(nil), spec.ExpectStatus...)
	}
	if s.Type == "" {
		s.Type = TypeTCP
		if s.Path != "" {
			s.Type = TypeHTTP
		}
	}
	if s.Type == TypeHTTP && !strings.HasPrefix(s.Path, "/") {
		s.Path = "/" + s.Path
	}
	if s.Interval <= 0 {
		s.Interval = DefaultInterval
	}
	if s.Timeout <= 0 {
		s.Timeout = DefaultTimeout
	}
	if s.HealthyThreshold <= 0 {
		s.HealthyThreshold = DefaultHealthyThreshold
	}
	if s.UnhealthyThreshold <= 0 {
		s.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	return s
}

// Run probes the worker until ctx is done: fast until the first pass, then
// every interval with jitter. Probes never overlap: the next one starts at
// the later of its tick (counted from the previous probe's start) and the
// previous probe's end, so a timeout longer than the interval is fine. It
// closes the probe's idle connections on exit.
func (p *Probe) Run(ctx context.Context) {
	defer p.transport.CloseIdleConnections()
	// A zero timer is the one round at start.
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.respec:
			// A random fraction of the new interval keeps workers whose
			// specs were reloaded together from being probed together.
			timer.Reset(p.nextDelay(false))
			continue
		case <-timer.C:
		}
		wasStarting := !p.started()
		start := time.Now()
		_ = p.Step(ctx) // the outcome is in the stats and the transitions
		timer.Reset(max(time.Until(start.Add(p.nextDelay(wasStarting))), 0))
	}
}

// started reports whether the worker has passed at least once.
func (p *Probe) started() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.passed
}

// nextDelay is the wait before the next probe. wasStarting says whether the
// probe just made was still in the starting phase.
func (p *Probe) nextDelay(wasStarting bool) time.Duration {
	p.mu.Lock()
	interval, passed := p.spec.Interval, p.passed
	p.mu.Unlock()
	switch {
	case !passed:
		return min(p.startInterval, interval)
	case wasStarting:
		// The first normal probe lands anywhere in the interval so that
		// workers started together spread out.
		return time.Duration(rand.Int64N(int64(interval)))
	default:
		spread := float64(interval) * jitterFraction
		return interval + time.Duration(spread*(2*rand.Float64()-1))
	}
}

// Step runs one probe now, synchronously: it updates the counters, may
// report a transition, and returns the probe's error (nil = pass). A probe
// cut short because ctx ended returns ctx's error and counts for nothing.
func (p *Probe) Step(ctx context.Context) error {
	p.mu.Lock()
	spec := p.spec
	p.mu.Unlock()

	start := time.Now()
	status, err := p.check(ctx, &spec)
	end := time.Now()
	if ctx.Err() != nil {
		return fmt.Errorf("probing worker %s: %w", p.worker, ctx.Err())
	}
	if err != nil && outOfDescriptors(err) {
		// corral's shortage says nothing of the worker: counting it would
		// take every worker out of rotation at once, an outage made of a
		// slowdown. The probe counts for nothing, like a cancelled one.
		p.noteShortage(err)
		return fmt.Errorf("probing worker %s: corral is out of file descriptors: %w", p.worker, err)
	}
	if err != nil {
		err = classify(err, spec.Timeout)
	}

	p.reportMu.Lock()
	defer p.reportMu.Unlock()
	t, flipped := p.record(&spec, status, err, end, end.Sub(start))
	if flipped {
		if t.Healthy {
			p.log.Info("worker healthy", "reason", t.Reason)
		} else {
			p.log.Warn("worker unhealthy", "reason", t.Reason)
		}
		if p.obs != nil {
			p.obs.HealthChanged(t)
		}
	}
	if err != nil {
		p.log.Trace("probe failed", "reason", reason(err), "latency", end.Sub(start))
		return fmt.Errorf("probing worker %s: %w", p.worker, err)
	}
	p.log.Trace("probe passed", "status", status, "latency", end.Sub(start))
	return nil
}

// outOfDescriptors reports whether err is corral's own lack of a file
// descriptor (or of kernel memory) for the probe's connection.
func outOfDescriptors(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// shortageLogEvery is the least time between two of a probe's lines about
// probes skipped for lack of descriptors.
const shortageLogEvery = time.Minute

// noteShortage logs a probe skipped for lack of descriptors, once a
// shortageLogEvery at most.
func (p *Probe) noteShortage(err error) {
	p.mu.Lock()
	due := p.shortageLogged.IsZero() || time.Since(p.shortageLogged) >= shortageLogEvery
	if due {
		p.shortageLogged = time.Now()
	}
	p.mu.Unlock()
	if due {
		p.log.Warn("probe skipped: corral is out of file descriptors; the worker's health stays as it was", "error", err)
	}
}

// check runs the probe of spec's type with spec's timeout.
func (p *Probe) check(ctx context.Context, spec *config.Health) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	if spec.Type == TypeHTTP {
		return checkHTTP(ctx, p.client, spec, p.addr)
	}
	return 0, checkTCP(ctx, p.addr)
}

// record folds one probe outcome into the state and decides, under the
// lock, whether it flipped the worker's health. Deciding and flipping in one
// critical section makes each flip happen, and be reported, exactly once.
func (p *Probe) record(spec *config.Health, status int, err error, at time.Time, latency time.Duration) (Transition, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := &p.stats
	s.LastCheck = at
	s.LastLatencyMillis = float64(latency) / float64(time.Millisecond)
	s.TotalChecks++
	t := Transition{Worker: p.worker, At: at}
	if err != nil {
		why := reason(err)
		s.TotalFailures++
		s.ConsecutiveFailures++
		s.ConsecutivePasses = 0
		s.LastError = why
		if !s.Healthy || s.ConsecutiveFailures < spec.UnhealthyThreshold {
			return t, false
		}
		s.Healthy = false
		t.Reason = why
		return t, true
	}
	s.ConsecutivePasses++
	s.ConsecutiveFailures = 0
	s.LastError = ""
	// In the starting phase one pass is enough: the worker has never been
	// healthy, so there is no flapping to damp, only a start to announce.
	firstPass := !p.passed
	p.passed = true
	if s.Healthy || (!firstPass && s.ConsecutivePasses < spec.HealthyThreshold) {
		return t, false
	}
	s.Healthy = true
	t.Healthy = true
	t.Reason = "passed"
	if status != 0 {
		t.Reason = fmt.Sprintf("passed, status %d", status)
	}
	return t, true
}

// Stats returns a snapshot of the probe's numbers; safe from any goroutine.
func (p *Probe) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Healthy reports the worker's current health as decided by the thresholds.
func (p *Probe) Healthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats.Healthy
}

// SetSpec replaces the probe settings in place after a config reload. The
// current health state and counters are kept, so a reload does not send a
// healthy worker back through its thresholds; a nil spec means TCP defaults.
func (p *Probe) SetSpec(spec *config.Health) {
	s := normalize(spec)
	p.mu.Lock()
	old := p.spec
	p.spec = s
	p.mu.Unlock()
	if old.Interval != s.Interval {
		select {
		case p.respec <- struct{}{}:
		default: // Run has a wake-up pending already
		}
	}
	p.log.Debug("health settings changed", "type", s.Type, "interval", s.Interval, "timeout", s.Timeout)
}
