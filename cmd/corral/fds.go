package main

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// keepInheritedDescriptors marks every descriptor from 3 up close-on-exec,
// so none that corral's own parent left open (a shell's redirection, a
// supervisor or test harness that forgot the flag, systemd's socket
// activation) reaches a worker. Go opens its own descriptors close-on-exec
// already; these are the only ones that would pass through. corral keeps
// them open (it may not know who else holds their other end).
func keepInheritedDescriptors() {
	if unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) == nil {
		return
	}
	// Kernels before 5.11 have no close_range: go through /proc.
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	for _, n := range names {
		if fd, err := strconv.Atoi(n); err == nil && fd > 2 {
			unix.CloseOnExec(fd)
		}
	}
}
