package admin

import (
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/corral-dev/corral/health"
	"github.com/corral-dev/corral/pool"
)

// sampleMetrics returns a snapshot source over sampleStatus with live
// counters the test can drive.
func sampleMetrics() (metricsFunc, *pool.AppStats, map[string]*pool.WorkerStats) {
	st := sampleStatus()
	stats := &pool.AppStats{}
	workers := map[string]*pool.WorkerStats{
		"web-1": {}, "web-2": {}, "web-3": {},
		"web-4": {}, // scaled down: counters stay, no live worker
	}
	apiWorkers := map[string]*pool.WorkerStats{"api-1": {}}
	src := metricsFunc(func() []AppMetrics {
		return []AppMetrics{
			{Name: "web", Stats: stats, Workers: workers, Status: st.Apps[0]},
			{Name: "api", Stats: &pool.AppStats{}, Workers: apiWorkers, Status: st.Apps[1]},
		}
	})
	return src, stats, workers
}

func TestMetricsValues(t *testing.T) {
	src, stats, workers := sampleMetrics()
	workers["web-1"].Observe(200, 3*time.Millisecond)
	workers["web-1"].Observe(204, 20*time.Millisecond)
	workers["web-1"].Observe(503, 2*time.Second)
	workers["web-1"].Errors.Add(1)
	// Two crash restarts and one recycle: restarts counts the crashes only.
	for _, cause := range []string{pool.CauseCrash, pool.CauseCrash} {
		workers["web-3"].AddRestart()
		workers["web-3"].AddReplacement(cause)
	}
	workers["web-3"].AddReplacement(pool.CauseRecycle)
	for range 3 {
		workers["web-2"].AddLogDropped(pool.DropRate)
	}
	workers["web-2"].AddLogDropped(pool.DropTruncated)
	stats.Queued.Store(5)
	stats.QueueRejected.Add(7)
	stats.QueueTimeouts.Add(2)
	stats.NoBackend.Add(3)
	stats.Retries.Add(4)
	stats.ClientCancelled.Add(6)

	srv := New(Options{Runtime: &fakeRuntime{}, Metrics: src, Version: "1.2.3"})
	reg := srv.registry

	expected := `
# HELP corral_requests_total Requests answered through a worker, by status class.
# TYPE corral_requests_total counter
corral_requests_total{app="api",code="1xx",worker="api-1"} 0
corral_requests_total{app="api",code="2xx",worker="api-1"} 0
corral_requests_total{app="api",code="3xx",worker="api-1"} 0
corral_requests_total{app="api",code="4xx",worker="api-1"} 0
corral_requests_total{app="api",code="5xx",worker="api-1"} 0
corral_requests_total{app="web",code="1xx",worker="web-1"} 0
corral_requests_total{app="web",code="2xx",worker="web-1"} 2
corral_requests_total{app="web",code="3xx",worker="web-1"} 0
corral_requests_total{app="web",code="4xx",worker="web-1"} 0
corral_requests_total{app="web",code="5xx",worker="web-1"} 1
corral_requests_total{app="web",code="1xx",worker="web-2"} 0
corral_requests_total{app="web",code="2xx",worker="web-2"} 0
corral_requests_total{app="web",code="3xx",worker="web-2"} 0
corral_requests_total{app="web",code="4xx",worker="web-2"} 0
corral_requests_total{app="web",code="5xx",worker="web-2"} 0
corral_requests_total{app="web",code="1xx",worker="web-3"} 0
corral_requests_total{app="web",code="2xx",worker="web-3"} 0
corral_requests_total{app="web",code="3xx",worker="web-3"} 0
corral_requests_total{app="web",code="4xx",worker="web-3"} 0
corral_requests_total{app="web",code="5xx",worker="web-3"} 0
corral_requests_total{app="web",code="1xx",worker="web-4"} 0
corral_requests_total{app="web",code="2xx",worker="web-4"} 0
corral_requests_total{app="web",code="3xx",worker="web-4"} 0
corral_requests_total{app="web",code="4xx",worker="web-4"} 0
corral_requests_total{app="web",code="5xx",worker="web-4"} 0
# HELP corral_proxy_errors_total Proxy-side failures (502/504 from corral) per worker.
# TYPE corral_proxy_errors_total counter
corral_proxy_errors_total{app="api",worker="api-1"} 0
corral_proxy_errors_total{app="web",worker="web-1"} 1
corral_proxy_errors_total{app="web",worker="web-2"} 0
corral_proxy_errors_total{app="web",worker="web-3"} 0
corral_proxy_errors_total{app="web",worker="web-4"} 0
# HELP corral_worker_restarts_total Restarts of a worker slot.
# TYPE corral_worker_restarts_total counter
corral_worker_restarts_total{app="api",worker="api-1"} 0
corral_worker_restarts_total{app="web",worker="web-1"} 0
corral_worker_restarts_total{app="web",worker="web-2"} 0
corral_worker_restarts_total{app="web",worker="web-3"} 2
corral_worker_restarts_total{app="web",worker="web-4"} 0
# HELP corral_worker_replacements_total Replacements of a worker slot's process, by cause (crash, health, recycle, manual, reload).
# TYPE corral_worker_replacements_total counter
corral_worker_replacements_total{app="api",cause="crash",worker="api-1"} 0
corral_worker_replacements_total{app="api",cause="health",worker="api-1"} 0
corral_worker_replacements_total{app="api",cause="manual",worker="api-1"} 0
corral_worker_replacements_total{app="api",cause="recycle",worker="api-1"} 0
corral_worker_replacements_total{app="api",cause="reload",worker="api-1"} 0
corral_worker_replacements_total{app="web",cause="crash",worker="web-1"} 0
corral_worker_replacements_total{app="web",cause="health",worker="web-1"} 0
corral_worker_replacements_total{app="web",cause="manual",worker="web-1"} 0
corral_worker_replacements_total{app="web",cause="recycle",worker="web-1"} 0
corral_worker_replacements_total{app="web",cause="reload",worker="web-1"} 0
corral_worker_replacements_total{app="web",cause="crash",worker="web-2"} 0
corral_worker_replacements_total{app="web",cause="health",worker="web-2"} 0
corral_worker_replacements_total{app="web",cause="manual",worker="web-2"} 0
corral_worker_replacements_total{app="web",cause="recycle",worker="web-2"} 0
corral_worker_replacements_total{app="web",cause="reload",worker="web-2"} 0
corral_worker_replacements_total{app="web",cause="crash",worker="web-3"} 2
corral_worker_replacements_total{app="web",cause="health",worker="web-3"} 0
corral_worker_replacements_total{app="web",cause="manual",worker="web-3"} 0
corral_worker_replacements_total{app="web",cause="recycle",worker="web-3"} 1
corral_worker_replacements_total{app="web",cause="reload",worker="web-3"} 0
corral_worker_replacements_total{app="web",cause="crash",worker="web-4"} 0
corral_worker_replacements_total{app="web",cause="health",worker="web-4"} 0
corral_worker_replacements_total{app="web",cause="manual",worker="web-4"} 0
corral_worker_replacements_total{app="web",cause="recycle",worker="web-4"} 0
corral_worker_replacements_total{app="web",cause="reload",worker="web-4"} 0
# HELP corral_worker_log_lines_dropped_total Lines of the worker's output not logged whole, by reason: rate (over the lines-per-second bound, not logged), truncated (logged cut at the line-length bound).
# TYPE corral_worker_log_lines_dropped_total counter
corral_worker_log_lines_dropped_total{app="api",reason="rate",worker="api-1"} 0
corral_worker_log_lines_dropped_total{app="api",reason="truncated",worker="api-1"} 0
corral_worker_log_lines_dropped_total{app="web",reason="rate",worker="web-1"} 0
corral_worker_log_lines_dropped_total{app="web",reason="truncated",worker="web-1"} 0
corral_worker_log_lines_dropped_total{app="web",reason="rate",worker="web-2"} 3
corral_worker_log_lines_dropped_total{app="web",reason="truncated",worker="web-2"} 1
corral_worker_log_lines_dropped_total{app="web",reason="rate",worker="web-3"} 0
corral_worker_log_lines_dropped_total{app="web",reason="truncated",worker="web-3"} 0
corral_worker_log_lines_dropped_total{app="web",reason="rate",worker="web-4"} 0
corral_worker_log_lines_dropped_total{app="web",reason="truncated",worker="web-4"} 0
# HELP corral_inflight_requests Requests being forwarded to a live worker now.
# TYPE corral_inflight_requests gauge
corral_inflight_requests{app="api",worker="api-1"} 0
corral_inflight_requests{app="web",worker="web-1"} 3
corral_inflight_requests{app="web",worker="web-2"} 0
corral_inflight_requests{app="web",worker="web-3"} 0
# HELP corral_worker_ejected 1 while passive health has ejected the worker.
# TYPE corral_worker_ejected gauge
corral_worker_ejected{app="api",worker="api-1"} 0
corral_worker_ejected{app="web",worker="web-1"} 0
corral_worker_ejected{app="web",worker="web-2"} 1
corral_worker_ejected{app="web",worker="web-3"} 0
# HELP corral_health_check_latency_seconds Latency of the worker's last health probe.
# TYPE corral_health_check_latency_seconds gauge
corral_health_check_latency_seconds{app="web",worker="web-1"} 0.0025
# HELP corral_workers Workers of an app by state.
# TYPE corral_workers gauge
corral_workers{app="api",state="backoff"} 0
corral_workers{app="api",state="draining"} 0
corral_workers{app="api",state="ready"} 1
corral_workers{app="api",state="starting"} 0
corral_workers{app="api",state="stopping"} 0
corral_workers{app="api",state="unhealthy"} 0
corral_workers{app="web",state="backoff"} 1
corral_workers{app="web",state="draining"} 0
corral_workers{app="web",state="ready"} 2
corral_workers{app="web",state="starting"} 0
corral_workers{app="web",state="stopping"} 0
corral_workers{app="web",state="unhealthy"} 0
# HELP corral_instances_desired Configured instances of an app.
# TYPE corral_instances_desired gauge
corral_instances_desired{app="api"} 1
corral_instances_desired{app="web"} 3
# HELP corral_queue_depth Requests waiting for a free worker now.
# TYPE corral_queue_depth gauge
corral_queue_depth{app="api"} 0
corral_queue_depth{app="web"} 5
# HELP corral_queue_rejected_total Requests answered 503 by the queue, by reason (full, timeout).
# TYPE corral_queue_rejected_total counter
corral_queue_rejected_total{app="api",reason="full"} 0
corral_queue_rejected_total{app="api",reason="timeout"} 0
corral_queue_rejected_total{app="web",reason="full"} 7
corral_queue_rejected_total{app="web",reason="timeout"} 2
# HELP corral_no_backend_total Requests answered 503 because no worker was in rotation.
# TYPE corral_no_backend_total counter
corral_no_backend_total{app="api"} 0
corral_no_backend_total{app="web"} 3
# HELP corral_retries_total Tries after the first one.
# TYPE corral_retries_total counter
corral_retries_total{app="api"} 0
corral_retries_total{app="web"} 4
# HELP corral_client_cancelled_total Requests the client gave up on (499).
# TYPE corral_client_cancelled_total counter
corral_client_cancelled_total{app="api"} 0
corral_client_cancelled_total{app="web"} 6
# HELP corral_build_info Always 1; the version label carries the corral version.
# TYPE corral_build_info gauge
corral_build_info{version="1.2.3"} 1
`
	names := []string{
		"corral_requests_total", "corral_proxy_errors_total", "corral_worker_restarts_total", "corral_worker_replacements_total",
		"corral_worker_log_lines_dropped_total", "corral_inflight_requests", "corral_worker_ejected", "corral_health_check_latency_seconds",
		"corral_workers", "corral_instances_desired", "corral_queue_depth", "corral_queue_rejected_total",
		"corral_no_backend_total", "corral_retries_total", "corral_client_cancelled_total", "corral_build_info",
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), names...); err != nil {
		t.Error(err)
	}

	// The histogram: 3ms and 20ms fall under 0.025, 2s under 2.5.
	h := `
# HELP corral_request_duration_seconds Time from forwarding a request to the end of its response.
# TYPE corral_request_duration_seconds histogram
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.001"} 0
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.0025"} 0
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.005"} 1
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.01"} 1
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.025"} 2
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.05"} 2
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.1"} 2
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.25"} 2
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.5"} 2
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="1"} 2
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="2.5"} 3
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="5"} 3
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="10"} 3
corral_request_duration_seconds_bucket{app="web",worker="web-1",le="+Inf"} 3
corral_request_duration_seconds_sum{app="web",worker="web-1"} 2.023
corral_request_duration_seconds_count{app="web",worker="web-1"} 3
`
	web1Only := metricsFunc(func() []AppMetrics {
		all := src()
		return []AppMetrics{{Name: "web", Workers: map[string]*pool.WorkerStats{"web-1": all[0].Workers["web-1"]}}}
	})
	if err := testutil.CollectAndCompare(newPoolCollector(web1Only), strings.NewReader(h), "corral_request_duration_seconds"); err != nil {
		t.Error(err)
	}
}

func TestMetricsCountersFollowObserve(t *testing.T) {
	src, _, workers := sampleMetrics()
	c := newPoolCollector(src)
	before := testutil.CollectAndCount(c, "corral_requests_total")
	for i := 0; i < 5; i++ {
		workers["web-2"].Observe(404, time.Millisecond)
	}
	if after := testutil.CollectAndCount(c, "corral_requests_total"); after != before {
		t.Errorf("series count changed from %d to %d; classes must always be present", before, after)
	}
	exp := `
# HELP corral_requests_total Requests answered through a worker, by status class.
# TYPE corral_requests_total counter
corral_requests_total{app="web",code="1xx",worker="web-2"} 0
corral_requests_total{app="web",code="2xx",worker="web-2"} 0
corral_requests_total{app="web",code="3xx",worker="web-2"} 0
corral_requests_total{app="web",code="4xx",worker="web-2"} 5
corral_requests_total{app="web",code="5xx",worker="web-2"} 0
`
	only := metricsFunc(func() []AppMetrics {
		return []AppMetrics{{Name: "web", Workers: map[string]*pool.WorkerStats{"web-2": workers["web-2"]}}}
	})
	if err := testutil.CollectAndCompare(newPoolCollector(only), strings.NewReader(exp), "corral_requests_total"); err != nil {
		t.Error(err)
	}
}

func TestMetricsDuplicateWorkerIDsFold(t *testing.T) {
	st := sampleStatus().Apps[0]
	// Mid-roll: the old and the new process of web-1 both show up.
	dup := st.Workers[0]
	dup.PID, dup.Inflight, dup.State = 999, 2, pool.StateStarting
	st.Workers = append(st.Workers, dup)
	src := metricsFunc(func() []AppMetrics { return []AppMetrics{{Name: "web", Status: st}} })

	exp := `
# HELP corral_inflight_requests Requests being forwarded to a live worker now.
# TYPE corral_inflight_requests gauge
corral_inflight_requests{app="web",worker="web-1"} 5
corral_inflight_requests{app="web",worker="web-2"} 0
corral_inflight_requests{app="web",worker="web-3"} 0
`
	if err := testutil.CollectAndCompare(newPoolCollector(src), strings.NewReader(exp), "corral_inflight_requests"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(newPoolCollector(src), "corral_workers"); n != len(workerStates) {
		t.Errorf("corral_workers has %d series, want one per state (%d)", n, len(workerStates))
	}
}

func TestMetricsBadLabelDoesNotPanic(t *testing.T) {
	bad := "web\xff"
	src := metricsFunc(func() []AppMetrics {
		return []AppMetrics{
			{Name: bad, Workers: map[string]*pool.WorkerStats{bad + "-1": {}}},
			{Name: "ok", Status: pool.AppStatus{Instances: 2}},
		}
	})
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{}, Metrics: src})
	code, _, body := do(t, "GET", addr, "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics = %d, want 200 with the valid series", code)
	}
	mustContain(t, body, `corral_instances_desired{app="ok"} 2`)
}

func TestObserveReload(t *testing.T) {
	srv := New(Options{Runtime: &fakeRuntime{}})
	at := time.Unix(1_700_000_000, 0)
	srv.ObserveReload(ReloadResult{At: at, Trigger: TriggerStart, Applied: true})
	srv.ObserveReload(ReloadResult{At: at.Add(time.Hour), Trigger: TriggerFile, Problems: []string{"x"}})
	srv.ObserveReload(ReloadResult{Trigger: TriggerAPI, Error: "boom"})
	srv.ObserveReload(ReloadResult{At: at.Add(time.Minute), Trigger: TriggerSignal, Applied: true})

	exp := `
# HELP corral_config_reloads_total Config reloads by result (applied, invalid, failed).
# TYPE corral_config_reloads_total counter
corral_config_reloads_total{result="applied"} 2
corral_config_reloads_total{result="failed"} 1
corral_config_reloads_total{result="invalid"} 1
# HELP corral_config_last_reload_success_timestamp_seconds Unix time of the last successfully applied config.
# TYPE corral_config_last_reload_success_timestamp_seconds gauge
corral_config_last_reload_success_timestamp_seconds 1.70000006e+09
`
	if err := testutil.GatherAndCompare(srv.registry, strings.NewReader(exp),
		"corral_config_reloads_total", "corral_config_last_reload_success_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}

func TestMetricsScrapeOverSocket(t *testing.T) {
	src, _, workers := sampleMetrics()
	workers["web-1"].Observe(201, 4*time.Millisecond)
	srv, addr := startServer(t, Options{Runtime: &fakeRuntime{}, Metrics: src, Version: "1.2.3"})
	srv.ObserveReload(ReloadResult{Applied: true, Trigger: TriggerStart})

	code, ctype, body := do(t, "GET", addr, "/metrics")
	if code != 200 || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("GET /metrics = %d %q", code, ctype)
	}
	mustContain(t, body,
		`corral_requests_total{app="web",code="2xx",worker="web-1"} 1`,
		`corral_request_duration_seconds_bucket{app="web",worker="web-1",le="0.005"} 1`,
		`corral_request_duration_seconds_count{app="web",worker="web-1"} 1`,
		`corral_workers{app="web",state="backoff"} 1`,
		`corral_workers{app="web",state="draining"} 0`,
		`corral_inflight_requests{app="web",worker="web-1"} 3`,
		`corral_config_reloads_total{result="applied"} 1`,
		`corral_config_reloads_total{result="invalid"} 0`,
		`corral_build_info{version="1.2.3"} 1`,
		"go_goroutines ",
		"process_start_time_seconds ",
	)
}

// BenchmarkScrape measures one /metrics render for 8 apps of 16 workers,
// the whole cost a scrape adds (none of it on the request path).
func BenchmarkScrape(b *testing.B) {
	var apps []AppMetrics
	for a := 0; a < 8; a++ {
		am := AppMetrics{Name: fmt.Sprintf("app%d", a), Stats: &pool.AppStats{}, Workers: map[string]*pool.WorkerStats{}}
		am.Status = pool.AppStatus{Name: am.Name, Instances: 16, Ready: 16}
		for w := 1; w <= 16; w++ {
			id := fmt.Sprintf("%s-%d", am.Name, w)
			ws := &pool.WorkerStats{}
			ws.Observe(200, time.Duration(w)*time.Millisecond)
			am.Workers[id] = ws
			am.Status.Workers = append(am.Status.Workers, pool.WorkerStatus{ID: id, PID: 1000 + w, Port: 20000 + w, State: pool.StateReady,
				Health: &health.Stats{LastCheck: time.Now(), LastLatencyMillis: 1}})
		}
		apps = append(apps, am)
	}
	srv := New(Options{Runtime: &fakeRuntime{}, Metrics: metricsFunc(func() []AppMetrics { return apps })})
	h := srv.Handler()
	b.ReportAllocs()
	var size int
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/metrics", nil))
		if rec.Code != 200 {
			b.Fatalf("GET /metrics = %d", rec.Code)
		}
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "bytes/scrape")
}

// withProxy adds proxy figures to a metrics source.
type withProxy struct {
	metricsFunc
	stats ProxyStats
}

func (w withProxy) ProxySnapshot() ProxyStats { return w.stats }

func TestMetricsProxyBuffers(t *testing.T) {
	src, _, _ := sampleMetrics()
	m := withProxy{src, ProxyStats{
		BufferMemoryBytes: 65536, BufferDiskBytes: 1000, BufferStagingBytes: 32768,
		BufferFiles: 1, BufferedResponses: 12, SpilledResponses: 3,
	}}
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{}, Metrics: m, Version: "1"})
	_, _, body := do(t, "GET", addr, "/metrics")
	mustContain(t, body,
		`corral_buffer_bytes{tier="memory"} 65536`,
		`corral_buffer_bytes{tier="disk"} 1000`,
		`corral_buffer_bytes{tier="staging"} 32768`,
		"corral_buffer_files 1",
		"corral_buffered_responses_total 12",
		"corral_buffer_spilled_responses_total 3",
	)
}

func TestMetricsLogLinesDropped(t *testing.T) {
	var dropped uint64 = 7
	srv := New(Options{Runtime: &fakeRuntime{}, LogLinesDropped: func() uint64 { return dropped }})
	exp := `
# HELP corral_log_lines_dropped_total Lines of corral's log (its own and its workers' output) dropped because its output (stderr) did not take them.
# TYPE corral_log_lines_dropped_total counter
corral_log_lines_dropped_total 7
`
	if err := testutil.GatherAndCompare(srv.registry, strings.NewReader(exp), "corral_log_lines_dropped_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(New(Options{Runtime: &fakeRuntime{}}).registry, "corral_log_lines_dropped_total"); err != nil || n != 0 {
		t.Errorf("%d series without a source (%v)", n, err)
	}
}

func TestMetricsClientConnections(t *testing.T) {
	src := &withProxy{metricsFunc: func() []AppMetrics { return nil }}
	src.stats.Connections = ClientConnections{Open: 7, Parked: 5, Limit: 100, LimitWaits: 3}
	reg, _ := newRegistry(src, "test")
	exp := `
# HELP corral_client_connection_limit Cap on open client connections (proxy.max_connections or its default).
# TYPE corral_client_connection_limit gauge
corral_client_connection_limit 100
# HELP corral_client_connection_limit_waits_total Accepts that waited because open client connections were at the cap.
# TYPE corral_client_connection_limit_waits_total counter
corral_client_connection_limit_waits_total 3
# HELP corral_client_connections Open client connections on the public listeners, by state (idle = parked between requests, active = the rest).
# TYPE corral_client_connections gauge
corral_client_connections{state="active"} 2
corral_client_connections{state="idle"} 5
`
	names := []string{"corral_client_connections", "corral_client_connection_limit", "corral_client_connection_limit_waits_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), names...); err != nil {
		t.Error(err)
	}
	src.stats.Connections.Open, src.stats.Connections.Parked = 1, 1
	exp = strings.Replace(strings.Replace(exp, `"active"} 2`, `"active"} 0`, 1), `"idle"} 5`, `"idle"} 1`, 1)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), names...); err != nil {
		t.Error(err)
	}
	// Without a proxy source the series are absent, not zero.
	bare, _ := newRegistry(metricsFunc(func() []AppMetrics { return nil }), "test")
	if n, err := testutil.GatherAndCount(bare, names...); err != nil || n != 0 {
		t.Errorf("%d connection series without a source (%v)", n, err)
	}
}

// TestMetricsAutoscale checks the autoscale series: bounds, decisions by
// direction and the time of the last one, only for autoscaled apps.
func TestMetricsAutoscale(t *testing.T) {
	st := sampleStatus()
	at := time.Unix(1700000000, 500_000_000)
	st.Apps[0].Autoscale = &pool.AutoscaleStatus{Min: 1, Max: 4, Current: 3,
		Last: &pool.ScaleDecision{Direction: pool.ScaleUp, From: 1, To: 3, Reason: "saturated", At: at}}
	stats := &pool.AppStats{}
	stats.ScaleUps.Add(3)
	stats.ScaleDowns.Add(2)
	src := metricsFunc(func() []AppMetrics {
		return []AppMetrics{
			{Name: "web", Stats: stats, Status: st.Apps[0]},
			{Name: "api", Stats: &pool.AppStats{}, Status: st.Apps[1]},
		}
	})
	exp := `
# HELP corral_autoscale_decisions_total Autoscale decisions, by direction (up, down).
# TYPE corral_autoscale_decisions_total counter
corral_autoscale_decisions_total{app="web",direction="down"} 2
corral_autoscale_decisions_total{app="web",direction="up"} 3
# HELP corral_autoscale_last_decision_timestamp_seconds Unix time of the last autoscale decision (0 before the first).
# TYPE corral_autoscale_last_decision_timestamp_seconds gauge
corral_autoscale_last_decision_timestamp_seconds{app="web"} 1.7000000005e+09
# HELP corral_autoscale_max Autoscale upper bound on an app's workers.
# TYPE corral_autoscale_max gauge
corral_autoscale_max{app="web"} 4
# HELP corral_autoscale_min Autoscale lower bound on an app's workers.
# TYPE corral_autoscale_min gauge
corral_autoscale_min{app="web"} 1
`
	if err := testutil.CollectAndCompare(newPoolCollector(src), strings.NewReader(exp),
		"corral_autoscale_min", "corral_autoscale_max", "corral_autoscale_decisions_total",
		"corral_autoscale_last_decision_timestamp_seconds"); err != nil {
		t.Error(err)
	}
}
