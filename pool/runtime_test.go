package pool

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRestartWorkerReplacesOnlyThatWorker checks that RestartWorker
// replaces one slot's process, new one ready before the old one leaves,
// leaves the others alone and counts a manual restart.
func TestRestartWorkerReplacesOnlyThatWorker(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 2))
	before := waitReady(t, a, 2)
	// Sample the table while the restart runs: web-2 must never be missing
	// from it except while its successor has already joined.
	stopWatch := make(chan struct{})
	minReady := watchCapacity(a, stopWatch)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.RestartWorker(ctx, "web-2"); err != nil {
		t.Fatal(err)
	}
	after := waitReady(t, a, 2)
	close(stopWatch)
	if low := <-minReady; low < 2 {
		t.Errorf("routing table fell to %d backends during the worker restart, want 2", low)
	}
	if after["web-1"] != before["web-1"] {
		t.Errorf("web-1 was replaced too: pid %d -> %d", before["web-1"], after["web-1"])
	}
	if after["web-2"] == before["web-2"] {
		t.Errorf("web-2 kept pid %d", before["web-2"])
	}
	for _, w := range a.Status().Workers {
		want := map[string]uint64{"web-1": 0, "web-2": 1}[w.ID]
		// restarts counts only restarts after a failure, as it always has.
		if w.Restarts != 0 || w.Replacements[CauseManual] != want {
			t.Errorf("%s: restarts %d by cause %v, want 0 and %d manual", w.ID, w.Restarts, w.Replacements, want)
		}
	}
	if err := a.RestartWorker(ctx, "web-9"); !errors.Is(err, ErrUnknownWorker) {
		t.Errorf("restart of web-9: %v, want ErrUnknownWorker", err)
	}
}

// TestScaleIsRuntimeOnly checks that Scale changes the worker count, shows
// the file's value beside it, and that Update (a reload) restores it.
func TestScaleIsRuntimeOnly(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	a := startApp(t, spec)
	waitReady(t, a, 1)
	prev, err := a.Scale(3)
	if err != nil || prev != 1 {
		t.Fatalf("Scale(3) = %d, %v; want 1, nil", prev, err)
	}
	waitReady(t, a, 3)
	if st := a.Status(); st.Instances != 3 || st.Configured != 1 {
		t.Errorf("status instances %d configured %d, want 3 and 1", st.Instances, st.Configured)
	}
	for _, n := range []int{0, -1, MaxInstances + 1} {
		if _, err := a.Scale(n); err == nil {
			t.Errorf("Scale(%d) accepted", n)
		}
	}
	same := *spec
	a.Update(&same)
	waitReady(t, a, 1)
	if _, err := a.Scale(2); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a, 2)
	a.ResetScale()
	waitReady(t, a, 1)
	if st := a.Status(); st.Instances != 1 {
		t.Errorf("instances %d after ResetScale, want 1", st.Instances)
	}
}

// TestRestartCausesCounted checks that a crash counts as crash and a
// rolling restart as manual.
func TestRestartCausesCounted(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 1))
	pid := waitReady(t, a, 1)["web-1"]
	if err := signalGroup(pid, 9); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "web-1 restarted after its crash", func() bool {
		p, ok := readyPIDs(a, 1)
		return ok && p["web-1"] != pid
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	w := a.Status().Workers[0]
	if w.Replacements[CauseCrash] != 1 || w.Replacements[CauseManual] != 1 || w.Restarts != 1 {
		t.Errorf("restarts %d by cause %v, want 1 crash and 1 manual", w.Restarts, w.Replacements)
	}
}

// TestRestartReturnsWithTheOutcomeInStatus pins that Status shows a roll's
// outcome as soon as Restart returns (it once showed "running" for a while).
func TestRestartReturnsWithTheOutcomeInStatus(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 1))
	waitReady(t, a, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 5 {
		if err := a.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if st := a.Status().Roll; st.State != "done" || st.Finished.IsZero() {
			t.Fatalf("roll %d: status right after Restart = %+v, want done", i, st)
		}
	}
}
