package admin

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/corral-dev/corral/pool"
)

// historyOptions are a server's options over sampleStatus with web's
// counters as its metrics.
func historyOptions(stats *pool.AppStats, ws map[string]*pool.WorkerStats) Options {
	st := sampleStatus()
	src := metricsFunc(func() []AppMetrics {
		return []AppMetrics{{Name: "web", Stats: stats, Workers: ws, Status: st.Apps[0]}}
	})
	return Options{Runtime: &fakeRuntime{status: st}, Metrics: src}
}

// TestHistoryRatesAndQuantiles samples counters, moves them on by a known
// amount over a known time, and checks what GET /history computes from
// the two samples: requests/s, errors/s, p50 and p99 from the latency
// histogram's growth, queue depth, and the workers' requests/s and CPU.
func TestHistoryRatesAndQuantiles(t *testing.T) {
	stats := &pool.AppStats{}
	ws := map[string]*pool.WorkerStats{"web-1": {}, "web-2": {}}
	// Not served: the sampler would add samples of its own.
	srv := New(historyOptions(stats, ws))
	now := testStart
	srv.hist.now = func() time.Time { return now }
	// What was served before the first sample is not in the rates.
	ws["web-1"].Observe(200, time.Second)
	srv.SampleHistory()

	// 10 s: 98 fast answers (3 ms), 2 slow ones (200 ms, 5xx), 10 503s from the queue.
	for i := 0; i < 98; i++ {
		ws["web-1"].Observe(200, 3*time.Millisecond)
	}
	ws["web-2"].Observe(500, 200*time.Millisecond)
	ws["web-2"].Observe(500, 200*time.Millisecond)
	stats.QueueRejected.Add(10)
	stats.Queued.Store(4)
	now = now.Add(10 * time.Second)
	srv.SampleHistory()

	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "http://127.0.0.1/history", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /history = %d", rec.Code)
	}
	var h History
	if err := json.Unmarshal(rec.Body.Bytes(), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Apps) != 2 || h.Apps[0].Name != "web" || h.Apps[1].Name != "api" {
		t.Fatalf("apps %+v", h.Apps)
	}
	web := h.Apps[0]
	if len(web.Points) != 1 {
		t.Fatalf("%d points from 2 samples, want 1", len(web.Points))
	}
	p := web.Points[0]
	near := func(what string, got, want float64) {
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	near("rps", p.Requests, 10)
	near("errors/s", p.Errors, 1.2)
	// The 50th of 100 lies in (2.5 ms, 5 ms]: 50/98 of the way.
	near("p50_ms", p.P50, 2.5+2.5*50/98)
	// The 99th is the first of the two in (100 ms, 250 ms]: half way.
	near("p99_ms", p.P99, 100+150*0.5)
	if p.Queued != 4 || !p.At.Equal(now) {
		t.Errorf("queued %d at %v", p.Queued, p.At)
	}
	near("web-1 rps", web.Workers["web-1"].Requests, 9.8)
	near("web-2 rps", web.Workers["web-2"].Requests, 0.2)
	if len(h.Apps[1].Points) != 0 {
		t.Errorf("api (no metrics) has points %+v", h.Apps[1].Points)
	}
}

// TestHistoryRingIsBounded: the ring keeps historySize samples.
func TestHistoryRingIsBounded(t *testing.T) {
	ws := map[string]*pool.WorkerStats{"web-1": {}}
	srv := New(historyOptions(&pool.AppStats{}, ws))
	now := testStart
	srv.hist.now = func() time.Time { now = now.Add(time.Second); return now }
	for i := 0; i < historySize+20; i++ {
		ws["web-1"].Observe(200, time.Millisecond)
		srv.SampleHistory()
	}
	h := srv.hist.snapshot([]string{"web"})
	if n := len(h.Apps[0].Points); n != historySize-1 {
		t.Errorf("%d points, want %d", n, historySize-1)
	}
	if first := h.Apps[0].Points[0].At; !first.Equal(testStart.Add(22 * time.Second)) {
		t.Errorf("oldest point at %v", first)
	}
}

// TestHistorySamplerRunsWhileServed: serving starts the sampler, which
// samples at once, and Shutdown stops it (goleak checks the goroutine).
func TestHistorySamplerRunsWhileServed(t *testing.T) {
	srv, _ := startServer(t, historyOptions(&pool.AppStats{}, map[string]*pool.WorkerStats{}))
	waitFor(t, "a first sample", func() bool {
		srv.hist.mu.Lock()
		defer srv.hist.mu.Unlock()
		return len(srv.hist.samples) > 0
	})
}

// TestHistoryWorkerStartedLate: a slot that appears after the window's
// first sample gets its rate from the first sample that has it.
func TestHistoryWorkerStartedLate(t *testing.T) {
	ws := map[string]*pool.WorkerStats{"web-1": {}}
	srv := New(historyOptions(&pool.AppStats{}, ws))
	now := testStart
	srv.hist.now = func() time.Time { return now }
	srv.SampleHistory()
	ws["web-2"] = &pool.WorkerStats{}
	now = now.Add(2 * time.Second)
	srv.SampleHistory()
	for i := 0; i < 8; i++ {
		ws["web-2"].Observe(200, time.Millisecond)
	}
	now = now.Add(2 * time.Second)
	srv.SampleHistory()
	h := srv.hist.snapshot([]string{"web"})
	if got := h.Apps[0].Workers["web-2"].Requests; got != 4 {
		t.Errorf("web-2 rps = %v, want 4 (8 requests in the 2 s it was there)", got)
	}
	if _, ok := h.Apps[0].Workers["web-1"]; !ok {
		t.Error("web-1 has no rate")
	}
}
