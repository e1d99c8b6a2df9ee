package pool

import (
	"testing"
	"time"
)

// TestCPUAccountNeverCountsTwiceNorGoesBack feeds a slot's account the
// readings of a process tree that changes: a child that ends and is
// reaped by its parent, a grandchild whose parent ended first, a worker
// replaced by a new one. Each step's added ticks are what the processes
// really used.
func TestCPUAccountNeverCountsTwiceNorGoesBack(t *testing.T) {
	leader := procKey{pid: 10, start: 1}
	child := procKey{pid: 11, start: 2}
	grandchild := procKey{pid: 12, start: 3}
	next := procKey{pid: 20, start: 9}
	p := func(k procKey, ppid int, self, children uint64) procCPU {
		return procCPU{key: k, ppid: ppid, self: self, children: children}
	}
	steps := []struct {
		name  string
		procs []procCPU
		want  uint64
	}{
		{"first sight counts everything", []procCPU{p(leader, 1, 5, 0), p(child, 10, 3, 0)}, 8},
		{"both run on", []procCPU{p(leader, 1, 7, 0), p(child, 10, 10, 0)}, 9},
		// The child used 2 more, ended, and the leader reaped it: its
		// cutime grew by the child's whole 12, of which 10 were counted.
		{"child reaped by the leader", []procCPU{p(leader, 1, 8, 12)}, 1 + 2},
		{"a new child and its child", []procCPU{p(leader, 1, 8, 12), p(child, 10, 0, 0), p(grandchild, 11, 4, 0)}, 4},
		// The grandchild (6 more, 10 in all) is reaped by the child
		// (4 in all, cutime 10), which the leader reaps: 14 reach the
		// leader's cutime, 4+0 of them counted before.
		{"grandchild, then child, reaped", []procCPU{p(leader, 1, 8, 26)}, 14 - 4},
		// The worker is replaced: its processes vanish (reaped outside the
		// group, by the shim), the new one is counted from its start.
		{"worker replaced", []procCPU{p(next, 1, 2, 0)}, 2},
		// A counter reset (a pid reused with the same start time cannot
		// happen; a smaller reading can only be a misread) never subtracts.
		{"smaller reading", []procCPU{p(next, 1, 1, 0)}, 0},
	}
	var acc cpuAccount
	var total uint64
	for _, s := range steps {
		got := acc.add(s.procs)
		total += got
		if got != s.want {
			t.Errorf("%s: added %d ticks, want %d", s.name, got, s.want)
		}
	}
	if total != 8+9+3+4+10+2 {
		t.Errorf("total %d ticks", total)
	}
}

// TestSamplerReadsWorkerMemoryAndCPU: a sampling round stores the
// worker's group RSS in /status and adds its CPU time to the slot.
func TestSamplerReadsWorkerMemoryAndCPU(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	a := startApp(t, spec, func(o *Options) { o.SampleInterval = 50 * time.Millisecond })
	waitReady(t, a, 1)
	eventually(t, 10*time.Second, "memory in status", func() bool {
		return a.Status().Workers[0].MemoryBytes >= 1<<20
	})
}
