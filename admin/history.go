package admin

import (
	"context"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/corral-dev/corral/pool"
)

// History: a sampler goroutine reads the Metrics counters every
// historyInterval and keeps the last historySize samples in a ring, so the
// dashboard can draw the last five minutes without a time-series store.
// GET /history turns consecutive samples into rates: requests/s, errors/s
// and p50/p99 latency from the histogram's growth over each interval, per
// app, and each live worker's requests/s and CPU over the last few samples.
// The sampler starts with the first Serve and stops with Shutdown.

// Defaults of the ring.
const (
	historyInterval = 2 * time.Second
	historySize     = 150 // five minutes at historyInterval
	// workerRateSamples is how many intervals a worker's rates are taken
	// over: CPU is read from /proc every couple of seconds too, and one
	// interval alone would alias between the two clocks.
	workerRateSamples = 5
)

// History is the body of GET /history.
type History struct {
	IntervalSeconds float64      `json:"interval_seconds"`
	Apps            []AppHistory `json:"apps"`
}

// AppHistory is one app's points, oldest first, and its workers' rates now.
type AppHistory struct {
	Name    string                `json:"name"`
	Points  []HistoryPoint        `json:"points"`
	Workers map[string]WorkerRate `json:"workers"`
}

// HistoryPoint is one interval of an app. Latencies are 0 for an interval
// without requests.
type HistoryPoint struct {
	At       time.Time `json:"t"`
	Requests float64   `json:"rps"`      // answered requests per second
	Errors   float64   `json:"errors"`   // 5xx per second, the proxy's own 502/503/504 included
	P50      float64   `json:"p50_ms"`   // median latency over the interval
	P99      float64   `json:"p99_ms"`   // 99th percentile latency over the interval
	Queued   int64     `json:"queued"`   // queue depth at the end of the interval
	Inflight int64     `json:"inflight"` // requests at the workers at the end of the interval
}

// WorkerRate is a worker slot's recent rates.
type WorkerRate struct {
	Requests float64 `json:"rps"`
	CPU      float64 `json:"cpu"` // CPU seconds per second (1 = one core busy)
}

// sample is the counters of every app at one moment.
type sample struct {
	at   time.Time
	apps map[string]appSample
}

type appSample struct {
	requests uint64 // every slot's answered requests
	errors   uint64 // 5xx answers plus the queue's and no-backend 503s
	buckets  []uint64
	queued   int64
	inflight int64
	workers  map[string]workerSample
}

type workerSample struct {
	requests uint64
	cpu      float64
}

// history is the ring; the sampler goroutine writes it, requests read it.
type history struct {
	mu      sync.Mutex
	samples []sample // oldest first, at most size
	size    int
	every   time.Duration
	now     func() time.Time // time.Now; tests set it
}

// startHistory starts the sampler once, when there is something to sample.
func (s *Server) startHistory() {
	s.historyOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.opts.Metrics == nil || s.closed {
			return
		}
		s.historyDone.Add(1)
		go func() {
			defer s.historyDone.Done()
			s.runHistory(s.work)
		}()
	})
}

// runHistory samples until ctx ends, the first time at once.
func (s *Server) runHistory(ctx context.Context) {
	t := time.NewTicker(s.hist.every)
	defer t.Stop()
	for {
		s.SampleHistory()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SampleHistory takes one sample now; the sampler calls it, and tests.
func (s *Server) SampleHistory() {
	if s.opts.Metrics == nil {
		return
	}
	now := time.Now
	if s.hist.now != nil {
		now = s.hist.now
	}
	snap := sample{at: now(), apps: map[string]appSample{}}
	for _, a := range s.opts.Metrics.MetricsSnapshot() {
		as := appSample{workers: map[string]workerSample{}, queued: a.Status.Queued}
		for id, ws := range a.Workers {
			if ws == nil {
				continue
			}
			as.requests += ws.Requests.Load()
			as.errors += ws.Status[5].Load()
			counts := ws.Latency.Counts()
			if as.buckets == nil {
				as.buckets = make([]uint64, len(counts))
			}
			for i, c := range counts {
				as.buckets[i] += c
			}
			as.workers[id] = workerSample{requests: ws.Requests.Load(), cpu: ws.CPUSeconds()}
		}
		if a.Stats != nil {
			as.queued = a.Stats.Queued.Load()
			as.errors += a.Stats.QueueRejected.Load() + a.Stats.QueueTimeouts.Load() + a.Stats.NoBackend.Load()
		}
		for _, w := range a.Status.Workers {
			as.inflight += w.Inflight
		}
		snap.apps[a.Name] = as
	}
	h := &s.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) == h.size {
		copy(h.samples, h.samples[1:])
		h.samples = h.samples[:h.size-1]
	}
	h.samples = append(h.samples, snap)
}

// snapshot computes the rates of the ring for apps, in that order.
func (h *history) snapshot(apps []string) History {
	h.mu.Lock()
	samples := append([]sample(nil), h.samples...)
	h.mu.Unlock()
	out := History{IntervalSeconds: h.every.Seconds(), Apps: make([]AppHistory, 0, len(apps))}
	for _, name := range apps {
		ah := AppHistory{Name: name, Points: []HistoryPoint{}, Workers: map[string]WorkerRate{}}
		for i := 1; i < len(samples); i++ {
			prev, okPrev := samples[i-1].apps[name]
			cur, ok := samples[i].apps[name]
			if !ok || !okPrev {
				continue
			}
			secs := samples[i].at.Sub(samples[i-1].at).Seconds()
			if secs <= 0 {
				continue
			}
			deltas := make([]uint64, len(cur.buckets))
			for j := range deltas {
				if j < len(prev.buckets) {
					deltas[j] = sub(cur.buckets[j], prev.buckets[j])
				} else {
					deltas[j] = cur.buckets[j]
				}
			}
			ah.Points = append(ah.Points, HistoryPoint{
				At:       samples[i].at,
				Requests: float64(sub(cur.requests, prev.requests)) / secs,
				Errors:   float64(sub(cur.errors, prev.errors)) / secs,
				P50:      quantile(0.5, deltas) * 1000,
				P99:      quantile(0.99, deltas) * 1000,
				Queued:   cur.queued,
				Inflight: cur.inflight,
			})
		}
		if n := len(samples); n >= 2 {
			last := samples[n-1]
			for id, w := range last.apps[name].workers {
				// From the oldest sample of the window that has the slot:
				// a slot started since has a shorter window.
				for _, first := range samples[max(0, n-1-workerRateSamples) : n-1] {
					old, ok := first.apps[name].workers[id]
					secs := last.at.Sub(first.at).Seconds()
					if !ok || secs <= 0 {
						continue
					}
					ah.Workers[id] = WorkerRate{
						Requests: float64(sub(w.requests, old.requests)) / secs,
						CPU:      math.Max(0, w.cpu-old.cpu) / secs,
					}
					break
				}
			}
		}
		out.Apps = append(out.Apps, ah)
	}
	return out
}

// quantile estimates the q-quantile (seconds) of a histogram's counts per
// bucket of pool.LatencyBuckets (the last one +Inf), interpolating within
// the bucket it falls in, as Prometheus' histogram_quantile does. 0 when
// the histogram is empty.
func quantile(q float64, counts []uint64) float64 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var below uint64
	for i, c := range counts {
		if c == 0 || float64(below+c) < rank {
			below += c
			continue
		}
		if i >= len(pool.LatencyBuckets) {
			return pool.LatencyBuckets[len(pool.LatencyBuckets)-1] // +Inf: the highest finite bound
		}
		lower := 0.0
		if i > 0 {
			lower = pool.LatencyBuckets[i-1]
		}
		upper := pool.LatencyBuckets[i]
		return lower + (upper-lower)*(rank-float64(below))/float64(c)
	}
	return pool.LatencyBuckets[len(pool.LatencyBuckets)-1]
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

func (s *Server) historyHandler(w http.ResponseWriter, r *http.Request) {
	st := s.opts.Runtime.Status()
	names := make([]string, 0, len(st.Apps))
	for _, a := range st.Apps {
		names = append(names, a.Name)
	}
	s.writeJSON(w, http.StatusOK, s.hist.snapshot(names))
}
