package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/corral-dev/corral/pool"
)

// workerStates are every state a worker can be in, so corral_workers has a
// series for each (0 included) and alerts need no absent() tricks.
var workerStates = []string{
	pool.StateStarting, pool.StateReady, pool.StateUnhealthy,
	pool.StateDraining, pool.StateStopping, pool.StateBackoff,
}

// statusClasses name WorkerStats.Status indexes as the code label.
var statusClasses = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Reload results, as the result label of corral_config_reloads_total.
const (
	reloadApplied = "applied"
	reloadInvalid = "invalid"
	reloadFailed  = "failed"
)

// newRegistry builds the admin server's own registry: Go and process
// collectors, reload counters, build info and a collector over m.
func newRegistry(m Metrics, version string) (*prometheus.Registry, *reloadMetrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	rm := newReloadMetrics()
	reg.MustRegister(rm.total, rm.lastSuccess)
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "corral_build_info",
		Help:        "Always 1; the version label carries the corral version.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	build.Set(1)
	reg.MustRegister(build)
	if m != nil {
		reg.MustRegister(newPoolCollector(m))
	}
	if pm, ok := m.(ProxyMetrics); ok {
		reg.MustRegister(proxyCollector{pm})
	}
	return reg, rm
}

// reloadMetrics count reload outcomes reported through ObserveReload.
type reloadMetrics struct {
	total       *prometheus.CounterVec
	lastSuccess prometheus.Gauge
}

func newReloadMetrics() *reloadMetrics {
	rm := &reloadMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "corral_config_reloads_total",
			Help: "Config reloads by result (applied, invalid, failed).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "corral_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successfully applied config.",
		}),
	}
	// Present from the first scrape so rate() and increase() see the zero.
	for _, res := range []string{reloadApplied, reloadInvalid, reloadFailed} {
		rm.total.WithLabelValues(res)
	}
	return rm
}

func (rm *reloadMetrics) observe(r ReloadResult) {
	switch {
	case r.Applied:
		rm.total.WithLabelValues(reloadApplied).Inc()
		at := r.At
		if at.IsZero() {
			at = time.Now()
		}
		rm.lastSuccess.Set(float64(at.UnixNano()) / 1e9)
	case len(r.Problems) > 0:
		rm.total.WithLabelValues(reloadInvalid).Inc()
	default:
		rm.total.WithLabelValues(reloadFailed).Inc()
	}
}

// poolCollector turns a Metrics snapshot into const metrics at scrape time,
// so the request path only bumps the pool's atomics.
type poolCollector struct {
	source Metrics

	requests, duration, proxyErrors, restarts *prometheus.Desc
	replacements                              *prometheus.Desc
	inflight, ejected, healthLatency          *prometheus.Desc
	workers, desired, queueDepth              *prometheus.Desc
	queueRejected, noBackend, retries         *prometheus.Desc
	clientCancelled, queueWait                *prometheus.Desc
	memory, cpu, logDropped                   *prometheus.Desc
	autoMin, autoMax, autoDecisions, autoLast *prometheus.Desc
}

func newPoolCollector(m Metrics) *poolCollector {
	app := []string{"app"}
	worker := []string{"app", "worker"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc("corral_"+name, help, labels, nil)
	}
	return &poolCollector{
		source:          m,
		requests:        d("requests_total", "Requests answered through a worker, by status class.", []string{"app", "worker", "code"}),
		duration:        d("request_duration_seconds", "Time from forwarding a request to the end of its response.", worker),
		proxyErrors:     d("proxy_errors_total", "Proxy-side failures (502/504 from corral) per worker.", worker),
		restarts:        d("worker_restarts_total", "Restarts of a worker slot.", worker),
		replacements:    d("worker_replacements_total", "Replacements of a worker slot's process, by cause (crash, health, recycle, manual, reload).", []string{"app", "worker", "cause"}),
		inflight:        d("inflight_requests", "Requests being forwarded to a live worker now.", worker),
		ejected:         d("worker_ejected", "1 while passive health has ejected the worker.", worker),
		healthLatency:   d("health_check_latency_seconds", "Latency of the worker's last health probe.", worker),
		workers:         d("workers", "Workers of an app by state.", []string{"app", "state"}),
		desired:         d("instances_desired", "Configured instances of an app.", app),
		queueDepth:      d("queue_depth", "Requests waiting for a free worker now.", app),
		queueRejected:   d("queue_rejected_total", "Requests answered 503 by the queue, by reason (full, timeout).", []string{"app", "reason"}),
		noBackend:       d("no_backend_total", "Requests answered 503 because no worker was in rotation.", app),
		retries:         d("retries_total", "Tries after the first one.", app),
		clientCancelled: d("client_cancelled_total", "Requests the client gave up on (499).", app),
		queueWait:       d("queue_wait_seconds", "Time requests waited in the queue for a free worker (every request that was queued, whatever its outcome).", app),
		memory:          d("worker_memory_bytes", "Resident memory of the worker's whole process group, at the last sampling round.", worker),
		cpu:             d("worker_cpu_seconds_total", "CPU time (user and system) of every process of the slot's workers, over all its workers.", worker),
		logDropped:      d("worker_log_lines_dropped_total", "Lines of the worker's output not logged whole, by reason: rate (over the lines-per-second bound, not logged), truncated (logged cut at the line-length bound).", []string{"app", "worker", "reason"}),
		autoMin:         d("autoscale_min", "Autoscale lower bound on an app's workers.", app),
		autoMax:         d("autoscale_max", "Autoscale upper bound on an app's workers.", app),
		autoDecisions:   d("autoscale_decisions_total", "Autoscale decisions, by direction (up, down).", []string{"app", "direction"}),
		autoLast:        d("autoscale_last_decision_timestamp_seconds", "Unix time of the last autoscale decision (0 before the first).", app),
	}
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.requests, c.duration, c.proxyErrors, c.restarts, c.replacements, c.inflight, c.ejected,
		c.healthLatency, c.workers, c.desired, c.queueDepth, c.queueRejected,
		c.noBackend, c.retries, c.clientCancelled, c.queueWait, c.memory, c.cpu, c.logDropped,
		c.autoMin, c.autoMax, c.autoDecisions, c.autoLast,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, a := range c.source.MetricsSnapshot() {
		c.collectApp(ch, a)
	}
}

func (c *poolCollector) collectApp(ch chan<- prometheus.Metric, a AppMetrics) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- constMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- constMetric(d, prometheus.GaugeValue, v, labels...)
	}

	for _, id := range sortedKeys(a.Workers) {
		ws := a.Workers[id]
		if ws == nil {
			continue
		}
		for class := 1; class < len(statusClasses); class++ {
			counter(c.requests, ws.Status[class].Load(), a.Name, id, statusClasses[class])
		}
		if other := ws.Status[0].Load(); other > 0 {
			counter(c.requests, other, a.Name, id, statusClasses[0])
		}
		ch <- constHistogram(c.duration, &ws.Latency, a.Name, id)
		counter(c.proxyErrors, ws.Errors.Load(), a.Name, id)
		ch <- constMetric(c.cpu, prometheus.CounterValue, ws.CPUSeconds(), a.Name, id)
		counter(c.restarts, ws.Restarts(), a.Name, id)
		for _, cause := range pool.ReplacementCauses {
			counter(c.replacements, ws.Replacements(cause), a.Name, id, cause)
		}
		for _, reason := range pool.LogDropReasons {
			counter(c.logDropped, ws.LogLinesDropped(reason), a.Name, id, reason)
		}
	}

	// During a roll two processes can briefly share a slot id; fold them
	// into one series because a registry refuses duplicate label sets.
	live := liveWorkers(a.Status.Workers)
	for _, id := range sortedKeys(live) {
		w := live[id]
		gauge(c.inflight, float64(w.inflight), a.Name, id)
		gauge(c.ejected, boolFloat(w.ejected), a.Name, id)
		gauge(c.memory, float64(w.memory), a.Name, id)
		if w.probed {
			gauge(c.healthLatency, w.healthLatency, a.Name, id)
		}
	}

	byState := make(map[string]int, len(workerStates))
	for _, w := range a.Status.Workers {
		byState[w.State]++
	}
	for _, st := range workerStates {
		gauge(c.workers, float64(byState[st]), a.Name, st)
	}
	gauge(c.desired, float64(a.Status.Instances), a.Name)

	queued := a.Status.Queued
	if a.Stats != nil {
		queued = a.Stats.Queued.Load()
		counter(c.queueRejected, a.Stats.QueueRejected.Load(), a.Name, "full")
		counter(c.queueRejected, a.Stats.QueueTimeouts.Load(), a.Name, "timeout")
		counter(c.noBackend, a.Stats.NoBackend.Load(), a.Name)
		counter(c.retries, a.Stats.Retries.Load(), a.Name)
		counter(c.clientCancelled, a.Stats.ClientCancelled.Load(), a.Name)
		ch <- constHistogram(c.queueWait, &a.Stats.QueueWait, a.Name)
	}
	gauge(c.queueDepth, float64(queued), a.Name)

	if as := a.Status.Autoscale; as != nil {
		gauge(c.autoMin, float64(as.Min), a.Name)
		gauge(c.autoMax, float64(as.Max), a.Name)
		at := 0.0
		if as.Last != nil {
			at = float64(as.Last.At.UnixNano()) / 1e9
		}
		gauge(c.autoLast, at, a.Name)
		if a.Stats != nil {
			counter(c.autoDecisions, a.Stats.ScaleUps.Load(), a.Name, pool.ScaleUp)
			counter(c.autoDecisions, a.Stats.ScaleDowns.Load(), a.Name, pool.ScaleDown)
		}
	}
}

// constMetric is prometheus.MustNewConstMetric without the panic: Collect
// runs in a goroutine of the registry, where a panic (say, a label that is
// not UTF-8) would take corral down. An invalid metric fails only its series.
func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, t, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

// constHistogram is h as a const metric, an invalid one if it cannot be.
func constHistogram(d *prometheus.Desc, h *pool.Histogram, labels ...string) prometheus.Metric {
	count, sum, buckets := h.Snapshot()
	m, err := prometheus.NewConstHistogram(d, count, sum, buckets, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

// liveWorker is the per-slot gauge values of the processes in a status.
type liveWorker struct {
	inflight      int64
	memory        int64 // bytes, summed over the slot's processes
	ejected       bool
	probed        bool
	healthLatency float64 // seconds
}

func liveWorkers(ws []pool.WorkerStatus) map[string]*liveWorker {
	out := make(map[string]*liveWorker, len(ws))
	for _, w := range ws {
		lw := out[w.ID]
		if lw == nil {
			lw = &liveWorker{}
			out[w.ID] = lw
		}
		lw.inflight += w.Inflight
		lw.memory += w.MemoryBytes
		lw.ejected = lw.ejected || w.Ejected
		if w.Health != nil && !w.Health.LastCheck.IsZero() {
			lat := w.Health.LastLatencyMillis / 1000
			if !lw.probed || lat > lw.healthLatency {
				lw.healthLatency = lat
			}
			lw.probed = true
		}
	}
	return out
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// proxyCollector exposes ProxyStats at scrape time.
type proxyCollector struct{ source ProxyMetrics }

var (
	connsDesc = prometheus.NewDesc("corral_client_connections",
		"Open client connections on the public listeners, by state (idle = parked between requests, active = the rest).", []string{"state"}, nil)
	connLimitDesc = prometheus.NewDesc("corral_client_connection_limit",
		"Cap on open client connections (proxy.max_connections or its default).", nil, nil)
	connWaitsDesc = prometheus.NewDesc("corral_client_connection_limit_waits_total",
		"Accepts that waited because open client connections were at the cap.", nil, nil)
	fdWaitsDesc = prometheus.NewDesc("corral_client_accept_descriptor_waits_total",
		"Accepts that waited because corral was out of file descriptors (the connection waited in the listen backlog).", nil, nil)
	bufferBytesDesc = prometheus.NewDesc("corral_buffer_bytes",
		"Bytes held for slow clients: tier memory (response spools and request bodies), disk (temporary files, not yet sent), staging (blocks feeding the files).",
		[]string{"tier"}, nil)
	bufferFilesDesc = prometheus.NewDesc("corral_buffer_files",
		"Temporary buffer files open (unlinked: they never appear in the directory).", nil, nil)
	bufferedDesc = prometheus.NewDesc("corral_buffered_responses_total",
		"Responses read from the worker ahead of the client.", nil, nil)
	spilledDesc = prometheus.NewDesc("corral_buffer_spilled_responses_total",
		"Buffered responses of which some part went to a temporary file.", nil, nil)
)

// Describe implements prometheus.Collector.
func (proxyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{connsDesc, connLimitDesc, connWaitsDesc, fdWaitsDesc, bufferBytesDesc, bufferFilesDesc, bufferedDesc, spilledDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c proxyCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.source.ProxySnapshot()
	cs := s.Connections
	ch <- constMetric(connsDesc, prometheus.GaugeValue, float64(max(cs.Open-cs.Parked, 0)), "active")
	ch <- constMetric(connsDesc, prometheus.GaugeValue, float64(cs.Parked), "idle")
	ch <- constMetric(connLimitDesc, prometheus.GaugeValue, float64(cs.Limit))
	ch <- constMetric(connWaitsDesc, prometheus.CounterValue, float64(cs.LimitWaits))
	ch <- constMetric(fdWaitsDesc, prometheus.CounterValue, float64(cs.DescriptorWaits))
	ch <- constMetric(bufferBytesDesc, prometheus.GaugeValue, float64(s.BufferMemoryBytes), "memory")
	ch <- constMetric(bufferBytesDesc, prometheus.GaugeValue, float64(s.BufferDiskBytes), "disk")
	ch <- constMetric(bufferBytesDesc, prometheus.GaugeValue, float64(s.BufferStagingBytes), "staging")
	ch <- constMetric(bufferFilesDesc, prometheus.GaugeValue, float64(s.BufferFiles))
	ch <- constMetric(bufferedDesc, prometheus.CounterValue, float64(s.BufferedResponses))
	ch <- constMetric(spilledDesc, prometheus.CounterValue, float64(s.SpilledResponses))
}
