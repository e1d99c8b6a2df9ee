package pool

import (
	"context"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// benchApp starts n ready workers for a benchmark and stops them after it.
func benchApp(b *testing.B, n int) *App {
	b.Helper()
	spec := &config.App{
		Name: "bench", Command: []string{testBinary()}, Dir: b.TempDir(),
		Env: map[string]string{envMode: "ok"}, Instances: n, StopTimeout: 3 * time.Second,
		StartTimeout: 10 * time.Second, Surge: 1,
		Backoff: config.Backoff{Min: 50 * time.Millisecond, Max: time.Second},
	}
	a := New(spec, Options{Logger: testLogger(), Ports: testPorts, Reaper: testReaper})
	a.Start()
	b.Cleanup(func() {
		if err := a.Stop(context.Background()); err != nil {
			b.Error(err)
		}
	})
	if !waitFor(time.Now().Add(15*time.Second), nil, func() bool { return len(a.Table().Backends) == n }) {
		b.Fatalf("%d workers not ready", n)
	}
	return a
}

// BenchmarkTable is the proxy's per-request cost of reading the routing table.
func BenchmarkTable(b *testing.B) {
	a := benchApp(b, 4)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if len(a.Table().Backends) != 4 {
				b.Fatal("table changed")
			}
		}
	})
}

// BenchmarkStatus is the cost of one /status snapshot of a 4-worker app.
func BenchmarkStatus(b *testing.B) {
	a := benchApp(b, 4)
	b.ReportAllocs()
	for b.Loop() {
		if len(a.Status().Workers) != 4 {
			b.Fatal("workers changed")
		}
	}
}

// BenchmarkRollingRestart is one zero-downtime roll of 4 workers (surge 1),
// dominated by the workers' start-up until their first passed probe.
func BenchmarkRollingRestart(b *testing.B) {
	a := benchApp(b, 4)
	for b.Loop() {
		if err := a.Restart(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
