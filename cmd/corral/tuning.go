package main

import (
	"os"
	"runtime"
)

// tuneRuntime sets Go runtime knobs the proxy measurably gains from,
// leaving alone any the user set through the environment.
//
// GOMAXPROCS is doubled from its default (the CPUs, or the cgroup CPU
// limit). The proxy spends most of its time in socket reads and writes; a
// goroutine in a syscall keeps its P until the runtime's monitor takes it
// back after at least 20 µs, and meanwhile ready goroutines wait. Spare Ps
// let them run. Measured with bench/proxy.sh's setup on 2 cores shared with
// wrk and the workers (alternating 3 s runs, 10 pairs): 4 Ps gave +7 %
// req/s over 2 at the same CPU per request; 6 Ps gave nothing over 4.
// Setting it stops the runtime from following later cgroup limit changes.
//
// GOGC is left alone: the proxy allocates about 200 bytes per request, and
// the collector took under 1 % of its CPU under load.
func tuneRuntime() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(2 * runtime.GOMAXPROCS(0))
	}
}
