package pool

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// Process sampling: a round every Options.SampleInterval (2 s by default)
// reads /proc once for every worker of the app, off the supervisor, and
// posts back what it found: each worker's process-group RSS (shown in
// /status and corral_worker_memory_bytes) and the CPU time its processes
// used since the round before, added to the slot's counter
// (corral_worker_cpu_seconds_total). A scrape reads the last round, so
// scraping often costs no /proc walk. The recycle round's max_memory check
// reads /proc with the same readGroups.
//
// The CPU counter's rule: it is the slot's, so it never goes back when a
// worker is replaced and its labels stay. Each round adds, for every
// process of the slot's groups, what its utime+stime and its reaped
// children's cutime+cstime grew since it was last seen (its whole figure
// when first seen). A process that ended was counted up to its last
// sighting; its parent's cutime then grows by its whole time, and what was
// already counted of it is taken off that growth, so nothing counts twice.
// Time a process used after the last round and before it ended is lost
// unless a parent in the group reaped it; a delta is never negative.

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat: 100
// on every architecture Linux runs on (it is part of the kernel's ABI,
// whatever the kernel's own HZ).
const clockTicks = 100

// defaultSampleInterval is Options.SampleInterval when left zero.
const defaultSampleInterval = 2 * time.Second

// procKey names one process over its life: pids are reused, start times
// tell the two apart.
type procKey struct {
	pid   int
	start uint64
}

// procCPU is one process's times, in clock ticks.
type procCPU struct {
	key      procKey
	ppid     int
	self     uint64 // utime + stime
	children uint64 // cutime + cstime: children it has reaped
}

// groupUsage is one process group as one read of /proc found it.
type groupUsage struct {
	rss   int64 // bytes
	procs []procCPU
}

// readGroups reads every process of the process groups pgids from
// /proc/<pid>/stat: the group's summed RSS and each process's CPU times.
func readGroups(pgids map[int]bool) map[int]*groupUsage {
	out := make(map[int]*groupUsage, len(pgids))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	page := int64(os.Getpagesize())
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// The comm field may hold spaces; fields after the last ')' are
		// fixed (proc(5), counted from state = 0): [1] ppid, [2] process
		// group, [11..14] utime stime cutime cstime, [19] start time,
		// [21] RSS in pages.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 22 {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		if !pgids[pgrp] {
			continue
		}
		g := out[pgrp]
		if g == nil {
			g = &groupUsage{}
			out[pgrp] = g
		}
		pages, _ := strconv.ParseInt(f[21], 10, 64)
		g.rss += pages * page
		ppid, _ := strconv.Atoi(f[1])
		start, _ := strconv.ParseUint(f[19], 10, 64)
		g.procs = append(g.procs, procCPU{
			key:      procKey{pid: pid, start: start},
			ppid:     ppid,
			self:     parseTicks(f[11]) + parseTicks(f[12]),
			children: parseTicks(f[13]) + parseTicks(f[14]),
		})
	}
	return out
}

func parseTicks(s string) uint64 {
	n, _ := strconv.ParseInt(s, 10, 64) // cutime is signed in proc(5)
	return uint64(max(n, 0))
}

// groupRSS sums the resident set size of every process in each of the
// process groups pgids.
func groupRSS(pgids map[int]bool) map[int]int64 {
	out := make(map[int]int64, len(pgids))
	for pgid, g := range readGroups(pgids) {
		out[pgid] = g.rss
	}
	return out
}

// cpuAccount turns successive readings of a slot's processes into a
// monotonic CPU total, by the rule at the top of this file. The supervisor
// owns it.
type cpuAccount struct {
	seen map[procKey]procCPU
}

// add takes one reading of every process of the slot's groups and returns
// the ticks they used since the last one.
func (c *cpuAccount) add(procs []procCPU) uint64 {
	now := make(map[procKey]procCPU, len(procs))
	present := make(map[int]bool, len(procs))
	for _, p := range procs {
		now[p.key] = p
		present[p.key.pid] = true
	}
	// What was counted of processes that ended goes to the nearest
	// ancestor still here, which reaped them (through ancestors that
	// ended too).
	byPid := make(map[int]procCPU, len(c.seen))
	for k, p := range c.seen {
		if _, ok := now[k]; !ok {
			byPid[k.pid] = p
		}
	}
	credit := make(map[int]uint64)
	for _, p := range byPid {
		up := p.ppid
		for hops := 0; !present[up] && hops < len(byPid); hops++ {
			parent, ok := byPid[up]
			if !ok {
				break
			}
			up = parent.ppid
		}
		if present[up] {
			credit[up] += p.self + p.children
		}
	}
	var total uint64
	for _, p := range procs {
		old, ok := c.seen[p.key]
		if !ok {
			total += p.self + p.children
			continue
		}
		total += sub(p.self, old.self) + sub(sub(p.children, old.children), credit[p.key.pid])
	}
	c.seen = now
	return total
}

// sub is a - b, or 0 when b is larger.
func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// armSample (re)arms the next sampling round.
func (a *App) armSample() {
	if a.sampleTimer != nil {
		a.sampleTimer.Stop()
		a.sampleTimer = nil
	}
	if a.stopping {
		return
	}
	every := a.opts.SampleInterval
	if every <= 0 {
		every = defaultSampleInterval
	}
	var t *time.Timer
	t = a.after(every, func() {
		if a.sampleTimer != t {
			return
		}
		a.sampleTimer = nil
		a.sampleRound()
		a.armSample()
	})
	a.sampleTimer = t
}

// sampleRound reads the app's process groups off the supervisor and
// applies the reading on it; a round still reading is not doubled.
func (a *App) sampleRound() {
	if a.stopping || a.sampling {
		return
	}
	pgids := make(map[int]bool, len(a.workers))
	for w := range a.workers {
		if w.proc != nil && !w.exited {
			pgids[w.proc.pid] = true
		}
	}
	if len(pgids) == 0 {
		return
	}
	a.sampling = true
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		groups := readGroups(pgids)
		a.post(func() {
			a.sampling = false
			a.applySample(groups)
		})
	}()
}

// applySample stores each worker's memory and adds each slot's CPU time.
func (a *App) applySample(groups map[int]*groupUsage) {
	bySlot := make(map[*slot][]procCPU)
	for w := range a.workers {
		if w.proc == nil {
			continue
		}
		g := groups[w.proc.pid]
		if g == nil {
			if w.exited {
				continue
			}
			g = &groupUsage{}
		}
		w.memBytes.Store(g.rss)
		bySlot[w.slot] = append(bySlot[w.slot], g.procs...)
	}
	for s, procs := range bySlot {
		s.stats.cpuTicks.Add(s.cpu.add(procs))
	}
}
