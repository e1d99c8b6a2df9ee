package pool

import (
	"context"
	"testing"
	"time"
)

// TestBackgroundAppSettlesRollsAndScales checks a background app (serve =
// false): its workers, which never listen, are ready after settle_time
// with no port and no backend; a rolling restart replaces them and a scale
// adds one, and the routing table stays empty throughout.
func TestBackgroundAppSettlesRollsAndScales(t *testing.T) {
	spec := testSpec(t, "never", 2)
	spec.Background = true
	spec.SettleTime = 200 * time.Millisecond
	a := startApp(t, spec)
	start := time.Now()
	before := waitReady0(t, a, 2)
	if since := time.Since(start); since < spec.SettleTime {
		t.Errorf("ready after %s, before settle_time", since)
	}
	if !a.Ready() {
		t.Error("Ready() = false with 2 settled workers")
	}
	for _, w := range a.Status().Workers {
		if w.Port != 0 {
			t.Errorf("%s has port %d, want none", w.ID, w.Port)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	after := waitReady0(t, a, 2)
	for id, pid := range before {
		if after[id] == pid {
			t.Errorf("%s not replaced by the roll", id)
		}
	}
	if _, err := a.Scale(3); err != nil {
		t.Fatal(err)
	}
	waitReady0(t, a, 3)
}

// waitReady0 waits until exactly n background workers are ready, with an
// empty routing table, and returns their pids.
func waitReady0(t *testing.T, a *App, n int) map[string]int {
	t.Helper()
	pids := map[string]int{}
	eventually(t, 15*time.Second, "ready background workers", func() bool {
		st := a.Status()
		clear(pids)
		for _, w := range st.Workers {
			if w.State != StateReady {
				return false
			}
			pids[w.ID] = w.PID
		}
		if len(a.Table().Backends) != 0 {
			t.Fatalf("background app has %d backends in its table", len(a.Table().Backends))
		}
		return len(pids) == n && len(st.Workers) == n && st.Ready == n
	})
	return pids
}
