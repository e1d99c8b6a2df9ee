package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/corral-dev/corral/config"
)

// step runs one probe and fails the test if its outcome is not want.
func step(t *testing.T, p *Probe, wantPass bool) {
	t.Helper()
	err := p.Step(context.Background())
	if pass := err == nil; pass != wantPass {
		t.Fatalf("Step: err = %v, want pass = %v", err, wantPass)
	}
}

func TestStepThresholds(t *testing.T) {
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	p := newTestProbe(t, httpSpec(2, 3), srv.addr(), rec)

	if p.Healthy() {
		t.Fatal("new probe is healthy before any check")
	}
	step(t, p, true)
	tr := rec.next(t)
	if !tr.Healthy || tr.Worker != "web-1" || tr.Reason != "passed, status 200" || tr.At.IsZero() {
		t.Fatalf("first pass: transition %+v", tr)
	}

	srv.status.Store(503)
	step(t, p, false)
	step(t, p, false)
	rec.none(t)
	if !p.Healthy() {
		t.Fatal("unhealthy after 2 failures, threshold is 3")
	}
	step(t, p, false)
	tr = rec.next(t)
	if tr.Healthy || tr.Reason != "status 503" {
		t.Fatalf("third failure: transition %+v", tr)
	}
	step(t, p, false)
	rec.none(t)

	srv.status.Store(200)
	step(t, p, true)
	rec.none(t)
	if p.Healthy() {
		t.Fatal("healthy after 1 pass, threshold is 2")
	}
	step(t, p, true)
	tr = rec.next(t)
	if !tr.Healthy {
		t.Fatalf("second pass: transition %+v", tr)
	}

	st := p.Stats()
	want := Stats{Healthy: true, ConsecutivePasses: 2, TotalChecks: 7, TotalFailures: 4}
	if st.Healthy != want.Healthy || st.ConsecutivePasses != want.ConsecutivePasses ||
		st.ConsecutiveFailures != 0 || st.TotalChecks != want.TotalChecks ||
		st.TotalFailures != want.TotalFailures || st.LastError != "" {
		t.Fatalf("stats = %+v, want %+v", st, want)
	}
	if st.LastCheck.IsZero() || st.LastLatencyMillis <= 0 {
		t.Fatalf("stats miss last check or latency: %+v", st)
	}
}

func TestStartingPhaseOnePassIsReady(t *testing.T) {
	srv := newFlipServer(t, 500)
	rec := newRecorder()
	p := newTestProbe(t, httpSpec(3, 1), srv.addr(), rec)

	for range 4 {
		step(t, p, false)
	}
	rec.none(t) // never healthy, so failures flip nothing
	if st := p.Stats(); st.ConsecutiveFailures != 4 || st.LastError != "status 500" {
		t.Fatalf("stats after failures = %+v", st)
	}

	srv.status.Store(204)
	step(t, p, true)
	if tr := rec.next(t); !tr.Healthy || tr.Reason != "passed, status 204" {
		t.Fatalf("first pass despite healthy_threshold 3: transition %+v", tr)
	}
}

func TestRunReportsTransitions(t *testing.T) {
	srv := newFlipServer(t, 200)
	before := goleak.IgnoreCurrent()
	rec := newRecorder()
	spec := httpSpec(2, 2)
	spec.Interval = 20 * time.Millisecond
	p := newTestProbe(t, spec, srv.addr(), rec)
	stop := runProbe(t, p)

	if tr := rec.next(t); !tr.Healthy {
		t.Fatalf("want ready, got %+v", tr)
	}
	srv.status.Store(502)
	if tr := rec.next(t); tr.Healthy || tr.Reason != "status 502" {
		t.Fatalf("want unhealthy by status 502, got %+v", tr)
	}
	srv.status.Store(200)
	if tr := rec.next(t); !tr.Healthy {
		t.Fatalf("want healthy again, got %+v", tr)
	}
	if !p.Healthy() {
		t.Fatal("Healthy() disagrees with the last transition")
	}
	// The kept-alive probe connection must be closed when Run returns.
	stop()
	goleak.VerifyNone(t, before)
}

func TestRunProbesFastUntilFirstPass(t *testing.T) {
	srv := newFlipServer(t, 503)
	rec := newRecorder()
	spec := httpSpec(1, 1)
	spec.Interval = time.Hour // only the starting interval can get it ready in time
	p := newTestProbe(t, spec, srv.addr(), rec)
	runProbe(t, p)

	eventually(t, "3 probes while starting", func() bool { return srv.hits.Load() >= 3 })
	srv.status.Store(200)
	if tr := rec.next(t); !tr.Healthy {
		t.Fatalf("want ready, got %+v", tr)
	}
}

func TestRunExitsOnCancel(t *testing.T) {
	before := goleak.IgnoreCurrent()
	srv := newRawServer(t, hang)
	spec := &config.Health{Type: TypeHTTP, Path: "/", Interval: time.Hour, Timeout: time.Hour}
	p := newTestProbe(t, spec, srv.addr(), newRecorder())
	stop := runProbe(t, p)

	// Cancel while a probe is in flight: it must not wait for the timeout.
	eventually(t, "probe connected", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.conns) > 0
	})
	stop()
	if st := p.Stats(); st.TotalChecks != 0 {
		t.Fatalf("a probe cut short by cancel counted: %+v", st)
	}
	srv.close()
	goleak.VerifyNone(t, before)
}

func TestCancelledStepCountsForNothing(t *testing.T) {
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	p := newTestProbe(t, httpSpec(1, 1), srv.addr(), rec)
	step(t, p, true)
	rec.next(t)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := p.Step(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Step with cancelled ctx: err = %v", err)
	}
	rec.none(t)
	if st := p.Stats(); !st.Healthy || st.TotalChecks != 1 || st.TotalFailures != 0 {
		t.Fatalf("cancelled probe changed stats: %+v", st)
	}
}

func TestOneTransitionPerFlip(t *testing.T) {
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	p := newTestProbe(t, httpSpec(2, 2), srv.addr(), rec)

	const goroutines, steps = 8, 10
	hammer := func() {
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				for range steps {
					p.Step(context.Background())
				}
			})
		}
		wg.Wait()
	}
	for i, status := range []int{200, 500, 200, 500} {
		srv.status.Store(int64(status))
		hammer()
		want := status == 200
		if tr := rec.next(t); tr.Healthy != want {
			t.Fatalf("flip %d: transition %+v, want healthy = %v", i, tr, want)
		}
		rec.none(t)
	}
	if st := p.Stats(); st.TotalChecks != 4*goroutines*steps {
		t.Fatalf("total checks = %d, want %d", st.TotalChecks, 4*goroutines*steps)
	}
}

func TestSetSpecKeepsState(t *testing.T) {
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	p := newTestProbe(t, httpSpec(1, 5), srv.addr(), rec)
	step(t, p, true)
	step(t, p, true)
	rec.next(t)

	srv.status.Store(500)
	step(t, p, false)
	before := p.Stats()

	next := httpSpec(1, 2)
	next.Path = "/ready"
	p.SetSpec(next)
	if got := p.Stats(); got != before || !p.Healthy() {
		t.Fatalf("SetSpec changed state: %+v, was %+v", got, before)
	}
	rec.none(t)

	// The new threshold counts the failure seen before the reload.
	step(t, p, false)
	if tr := rec.next(t); tr.Healthy {
		t.Fatalf("want unhealthy after 2 failures with new threshold, got %+v", tr)
	}
	if _, path, _ := srv.seen(); path != "/ready" {
		t.Fatalf("probe after SetSpec used path %q, want /ready", path)
	}
}

func TestSetSpecWakesRun(t *testing.T) {
	srv := newFlipServer(t, 200)
	rec := newRecorder()
	spec := httpSpec(1, 1)
	spec.Interval = time.Hour
	p := newTestProbe(t, spec, srv.addr(), rec)
	runProbe(t, p)
	rec.next(t) // ready; the next normal probe is up to an hour away

	srv.status.Store(500)
	spec2 := httpSpec(1, 1)
	spec2.Interval = 20 * time.Millisecond
	p.SetSpec(spec2)
	if tr := rec.next(t); tr.Healthy {
		t.Fatalf("want unhealthy on the new interval, got %+v", tr)
	}
}

func TestNextDelay(t *testing.T) {
	spec := httpSpec(1, 1)
	spec.Interval = time.Second
	p := newTestProbe(t, spec, "127.0.0.1:1", nil)

	if d := p.nextDelay(true); d != StartInterval {
		t.Fatalf("starting delay = %s, want %s", d, StartInterval)
	}
	spec.Interval = 30 * time.Millisecond
	p.SetSpec(spec)
	if d := p.nextDelay(true); d != 30*time.Millisecond {
		t.Fatalf("starting delay = %s, want the shorter spec interval", d)
	}
	spec.Interval = time.Second
	p.SetSpec(spec)

	p.mu.Lock()
	p.passed = true
	p.mu.Unlock()
	first := map[time.Duration]bool{}
	normal := map[time.Duration]bool{}
	for range 100 {
		d := p.nextDelay(true)
		if d < 0 || d >= time.Second {
			t.Fatalf("first normal delay %s outside [0, 1s)", d)
		}
		first[d] = true
		d = p.nextDelay(false)
		if d < 900*time.Millisecond || d > 1100*time.Millisecond {
			t.Fatalf("normal delay %s outside 1s +-10%%", d)
		}
		normal[d] = true
	}
	if len(first) < 50 || len(normal) < 50 {
		t.Fatalf("delays do not vary: %d distinct first, %d distinct normal", len(first), len(normal))
	}
}

func TestNormalizeDefaults(t *testing.T) {
	got := normalize(nil)
	want := config.Health{
		Type:               TypeTCP,
		Interval:           2 * time.Second,
		Timeout:            time.Second,
		HealthyThreshold:   1,
		UnhealthyThreshold: 3,
	}
	if got.Type != want.Type || got.Interval != want.Interval || got.Timeout != want.Timeout ||
		got.HealthyThreshold != want.HealthyThreshold || got.UnhealthyThreshold != want.UnhealthyThreshold ||
		got.RestartAfter != 0 {
		t.Fatalf("normalize(nil) = %+v, want %+v", got, want)
	}
	if got := normalize(&config.Health{Path: "health"}); got.Type != TypeHTTP || got.Path != "/health" {
		t.Fatalf("path without type: %+v", got)
	}
}

func BenchmarkStepHTTP(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	defer srv.Close()
	p := NewProbe(httpSpec(1, 1), "web-1", strings.TrimPrefix(srv.URL, "http://"), nil, nil)
	defer p.transport.CloseIdleConnections()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Step(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStepTCP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	p := NewProbe(nil, "web-1", ln.Addr().String(), nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Step(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	ln.Close()
	<-done
}

// TestSlowProbesNeverOverlap: with a timeout longer than the interval and a
// worker that answers slower than the interval, each probe starts when the
// previous one ended (its tick has passed), never while it runs, and not a
// whole interval later either (issue 9, item 11).
func TestSlowProbesNeverOverlap(t *testing.T) {
	var mu sync.Mutex
	var starts, ends []time.Time
	inflight := 0
	overlapped := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight++
		overlapped = overlapped || inflight > 1
		starts = append(starts, time.Now())
		mu.Unlock()
		time.Sleep(250 * time.Millisecond) // a slow worker
		mu.Lock()
		inflight--
		ends = append(ends, time.Now())
		mu.Unlock()
	}))
	defer srv.Close()
	spec := httpSpec(1, 1)
	spec.Interval = 100 * time.Millisecond
	spec.Timeout = time.Second
	p := newTestProbe(t, spec, strings.TrimPrefix(srv.URL, "http://"), nil)
	stop := runProbe(t, p)
	eventually(t, "6 slow probes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(ends) >= 6
	})
	stop()
	mu.Lock()
	defer mu.Unlock()
	if overlapped {
		t.Error("two probes of one worker ran at once")
	}
	// Skip the first gaps: the starting phase and the random first offset.
	for i := 3; i < len(ends) && i+1 < len(starts); i++ {
		if gap := starts[i+1].Sub(ends[i]); gap > spec.Interval/2 {
			t.Errorf("probe %d started %v after probe %d ended: its tick had passed long before", i+1, gap, i)
		}
	}
}
