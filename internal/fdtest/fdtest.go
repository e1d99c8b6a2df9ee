// Package fdtest runs a piece of a test with the process out of file
// descriptors, for tests of what corral does when it has none left.
package fdtest

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"
)

// Exhaust lowers the process's descriptor limit to a little above what it
// has open and fills every free number below it, so that the next socket
// or open fails with EMFILE; the returned function undoes both. The test
// must not run in parallel with others, and nothing else should close a
// descriptor meanwhile (finalizers run first, by a collection).
func Exhaust(t testing.TB) (restore func()) {
	t.Helper()
	runtime.GC()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(len(ents) + 8)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	var fillers []*os.File
	restore = func() {
		for _, f := range fillers {
			f.Close()
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
			t.Fatal(err)
		}
	}
	for {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			return restore
		}
		if err != nil || len(fillers) > 1000 {
			restore()
			t.Fatalf("filling the descriptor table: %v (%d open)", err, len(fillers))
		}
		fillers = append(fillers, f)
	}
}
