package pool

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/config"
)

// Upstream is the proxy engine's connection pool to one backend. The pool
// creates one per backend through Options.NewUpstream and closes its idle
// connections once the backend has drained.
type Upstream interface {
	// CloseIdle closes pooled connections that carry no request.
	CloseIdle()
}

// Table is an app's immutable routing table: the backends in rotation.
// The pool publishes a new *Table whenever rotation changes; readers load it
// through App.Table without locks and never modify it.
type Table struct {
	// App is the spec the table was built from (routing and balancing settings).
	App *config.App
	// Backends are the workers in rotation (state ready), ordered by slot.
	Backends []*Backend
	// Stats are the app's counters shared with the proxy (queue depth...).
	Stats *AppStats
	// Version grows by one with every table the app publishes.
	Version uint64
}

// Backend is one running worker process as the proxy sees it. A Backend
// lives for one process: a restarted worker gets a new Backend (and port
// or socket) but keeps its slot's Stats.
type Backend struct {
	// ID is the stable slot id ("web-1"); it survives restarts of the slot.
	ID string
	// Addr is what to dial: "127.0.0.1:PORT", or the socket's absolute
	// path when Socket is set (an address starting with "/" is a socket).
	Addr string
	// Port is the worker's private port (0 for a socket worker).
	Port int
	// Socket is the worker's Unix socket path ("" for a TCP worker).
	Socket string
	// Upstream is the engine's connection pool for Addr (nil when no engine is attached).
	Upstream Upstream
	// Stats are the slot's monotonic counters (they survive restarts).
	Stats *WorkerStats

	// Inflight counts requests the proxy is forwarding to this backend now.
	Inflight atomic.Int64
	// Draining is set before the backend leaves the table; a proxy that
	// raised Inflight and then sees Draining must back off and pick again.
	Draining atomic.Bool

	// Passive health, written by the proxy.
	ConsecutiveFailures atomic.Int32
	Ejections           atomic.Int32 // times ejected in a row (ejection time grows with it)
	EjectedUntil        atomic.Int64 // unix nanoseconds; 0 = not ejected
	LastEjectReason     atomic.Pointer[string]
}

// Host returns the Host a request to b carries when its client sent none:
// the worker's address, or "localhost" for a socket, which has no host.
func (b *Backend) Host() string {
	if b.Socket != "" {
		return "localhost"
	}
	return b.Addr
}

// Ejected reports whether passive health has ejected b at time now.
func (b *Backend) Ejected(now time.Time) bool {
	u := b.EjectedUntil.Load()
	return u != 0 && now.UnixNano() < u
}

// Acquire raises b's in-flight count and reports whether b may take the
// request; when it may not (b is draining), the count is restored.
func (b *Backend) Acquire() bool {
	b.Inflight.Add(1)
	if b.Draining.Load() {
		b.Release()
		return false
	}
	return true
}

// Release lowers b's in-flight count after a request ends.
func (b *Backend) Release() {
	b.Inflight.Add(-1)
}

// AppStats are an app's counters shared by the pool, the proxy and metrics.
// They are created once per app name and survive reloads.
type AppStats struct {
	Queued          atomic.Int64  // requests waiting in the queue now
	QueueRejected   atomic.Uint64 // 503 because the queue was full
	QueueTimeouts   atomic.Uint64 // 503 because the wait deadline passed
	NoBackend       atomic.Uint64 // 503 because no worker was in rotation
	Retries         atomic.Uint64 // tries after the first
	ClientCancelled atomic.Uint64 // 499s
	ScaleUps        atomic.Uint64 // autoscale decisions up
	ScaleDowns      atomic.Uint64 // autoscale decisions down
	// QueueWait is how long requests waited in the queue: one observation
	// per request that entered it, whether it then got a worker, timed out
	// or its client left.
	QueueWait Histogram
}

// LatencyBuckets are the upper bounds (seconds) of the request latency histogram.
var LatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Histogram is a latency histogram over LatencyBuckets kept in atomics, so
// the request path records without a lock and a scrape reads it as is.
type Histogram struct {
	buckets   [14]atomic.Uint64 // len(LatencyBuckets) + the +Inf bucket
	sumMicros atomic.Uint64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	sec := d.Seconds()
	i := 0
	for i < len(LatencyBuckets) && sec > LatencyBuckets[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumMicros.Add(uint64(max(d.Microseconds(), 0)))
}

// Snapshot returns the count, the sum in seconds and the cumulative count
// per upper bound of LatencyBuckets, as Prometheus wants them.
func (h *Histogram) Snapshot() (count uint64, sum float64, cumulative map[float64]uint64) {
	cumulative = make(map[float64]uint64, len(LatencyBuckets))
	for i, ub := range LatencyBuckets {
		count += h.buckets[i].Load()
		cumulative[ub] = count
	}
	count += h.buckets[len(LatencyBuckets)].Load()
	sum = float64(h.sumMicros.Load()) / 1e6
	return count, sum, cumulative
}

// Counts returns the count in each bucket, not cumulative, the last one
// being +Inf: what a sampler keeps to compute quantiles over an interval.
func (h *Histogram) Counts() []uint64 {
	out := make([]uint64, len(h.buckets))
	for i := range out {
		out[i] = h.buckets[i].Load()
	}
	return out
}

// WorkerStats are one slot's monotonic request counters, written by the
// proxy with atomics and read by metrics and status. Counters never go back,
// so Prometheus rates stay correct across worker restarts.
type WorkerStats struct {
	Requests   atomic.Uint64    // answered requests, any status
	Status     [6]atomic.Uint64 // by class: [1]=1xx ... [5]=5xx, [0]=other
	Errors     atomic.Uint64    // proxy-side failures (502/504 from corral)
	Latency    Histogram        // forwarding to the end of the worker's response
	restartCnt atomic.Uint64
	replaced   [len(ReplacementCauses)]atomic.Uint64
	// cpuTicks is the CPU time (clock ticks) of every process the slot's
	// workers ran, accumulated by the process sampler (see procstat.go).
	cpuTicks atomic.Uint64
	// logDropped counts output lines over the bounds, by LogDropReasons.
	logDropped [len(LogDropReasons)]atomic.Uint64
}

// AddLogDropped counts one line of the slot's output not logged whole
// for reason (one of LogDropReasons; anything else is not counted).
func (s *WorkerStats) AddLogDropped(reason string) {
	if i := slices.Index(LogDropReasons[:], reason); i >= 0 {
		s.addLogDropped(i, 1)
	}
}

func (s *WorkerStats) addLogDropped(reason int, n uint64) { s.logDropped[reason].Add(n) }

// LogLinesDropped returns how many lines of the slot's output were not
// logged whole for reason (DropRate, DropTruncated).
func (s *WorkerStats) LogLinesDropped(reason string) uint64 {
	if i := slices.Index(LogDropReasons[:], reason); i >= 0 {
		return s.logDropped[i].Load()
	}
	return 0
}

// Observe records one answered request with its status code and duration.
func (s *WorkerStats) Observe(status int, d time.Duration) {
	s.Requests.Add(1)
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	s.Status[class].Add(1)
	s.Latency.Observe(d)
}

// CPUSeconds returns the CPU time, user and system, that the processes of
// the slot's workers used, over every worker the slot ever had.
func (s *WorkerStats) CPUSeconds() float64 { return float64(s.cpuTicks.Load()) / clockTicks }

// AddRestart counts one restart of the slot after a failure: its process
// crashed, or was killed for its health. Replacements a roll makes
// (recycle, manual, reload) are not restarts; see AddReplacement.
func (s *WorkerStats) AddRestart() { s.restartCnt.Add(1) }

// Restarts returns how often the slot was restarted after a failure.
func (s *WorkerStats) Restarts() uint64 { return s.restartCnt.Load() }

// Replacement causes: why a slot's process was replaced by a new one.
const (
	CauseCrash   = "crash"   // the process exited without being asked to
	CauseHealth  = "health"  // killed: not ready in time, or unhealthy too long
	CauseRecycle = "recycle" // replaced for max_requests, max_memory or max_age
	CauseManual  = "manual"  // replaced on request (API, CLI, SIGUSR2)
	CauseReload  = "reload"  // replaced because its process settings or files changed
)

// ReplacementCauses lists every replacement cause in a stable order.
var ReplacementCauses = [...]string{CauseCrash, CauseHealth, CauseRecycle, CauseManual, CauseReload}

// AddReplacement counts one replacement of the slot's process for cause
// (one of ReplacementCauses; anything else counts as a crash). A restart
// after a failure counts here too, as crash or health.
func (s *WorkerStats) AddReplacement(cause string) {
	for i, c := range ReplacementCauses {
		if c == cause {
			s.replaced[i].Add(1)
			return
		}
	}
	s.replaced[0].Add(1)
}

// Replacements returns how often the slot's process was replaced for cause.
func (s *WorkerStats) Replacements(cause string) uint64 {
	for i, c := range ReplacementCauses {
		if c == cause {
			return s.replaced[i].Load()
		}
	}
	return 0
}
