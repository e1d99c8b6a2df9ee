package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/config"
)

// envPoolHost makes the test binary a small corral: a reaper and one app of
// a shell worker whose server is a grandchild, with a daemon that left the
// worker's process group. It writes every descendant's pid to the file the
// variable names once the worker is ready, then runs until killed.
const envPoolHost = "CORRAL_TEST_POOLHOST"

// runPoolHost is the helper process of TestKilledPoolLeavesNothing.
func runPoolHost(pidFile string) {
	os.Unsetenv(envPoolHost) // its workers are the test binary too
	r := NewReaper(testLogger())
	go r.Run(context.Background())
	spec := &config.App{
		Name: "web", Instances: 1, StopTimeout: time.Second, StartTimeout: 10 * time.Second,
		Command: []string{"/bin/sh", "-c", `setsid sleep 301 & sleep 300 & "$0"; echo worker ended`, testBinary()},
		Env:     map[string]string{envMode: "ok"},
		Backoff: config.Backoff{Min: 50 * time.Millisecond, Max: time.Second},
	}
	a := New(spec, Options{Logger: testLogger(), Ports: NewPorts(config.PortRange{First: 31900, Last: 31949}), Reaper: r})
	a.Start()
	for !a.Ready() {
		time.Sleep(10 * time.Millisecond) // a helper process: no test to fail
	}
	for {
		pids := descendants(os.Getpid())
		if len(pids) >= 4 { // sh, sleep, setsid sleep, server (and the shim, when there is one)
			var b strings.Builder
			for _, p := range pids {
				fmt.Fprintln(&b, p)
			}
			os.WriteFile(pidFile+".tmp", []byte(b.String()), 0o644)
			os.Rename(pidFile+".tmp", pidFile)
			select {}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// descendants returns every live process below pid.
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		kids := childrenOf(queue[0])
		queue = append(queue[1:], kids...)
		out = append(out, kids...)
	}
	slices.Sort(out)
	return out
}

// TestKilledPoolLeavesNothing SIGKILLs a process running a pool: the whole
// tree of its shell worker (the server a grandchild, a setsid daemon) dies
// within seconds (issue 10, must-have 2).
func TestKilledPoolLeavesNothing(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	cmd := exec.Command(testBinary(), "-test.run=^$")
	cmd.Env = append(os.Environ(), envPoolHost+"="+pidFile)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The test process reaps every child (testReaper), so start it there.
	pid, exited, err := testReaper.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	eventually(t, 20*time.Second, "the pool host's worker tree", func() bool {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			return false
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			pids = append(pids, n)
		}
		return true
	})
	t.Logf("pool host %d, its descendants %v", pid, pids)
	if err := unix.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	defer func() {
		for _, p := range pids {
			unix.Kill(p, syscall.SIGKILL) // only what the test's own checks left
		}
		eventually(t, 5*time.Second, "the leftovers reaped", func() bool {
			return !slices.ContainsFunc(pids, func(p int) bool { return !processGone(p) })
		})
	}()
	if !waitFor(time.Now().Add(5*time.Second), nil, func() bool {
		return !slices.ContainsFunc(pids, func(p int) bool { return !processGone(p) })
	}) {
		var left []string
		for _, p := range pids {
			if !processGone(p) {
				cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline")
				left = append(left, fmt.Sprintf("%d %q", p, strings.ReplaceAll(string(cmdline), "\x00", " ")))
			}
		}
		t.Errorf("5s after the pool's process was killed these still run: %v", left)
	}
}

// TestStopKillsSetsidDaemon: a daemon a worker started in a session of its
// own is stopped with the worker (issue 10, must-have 2).
func TestStopKillsSetsidDaemon(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.Command = []string{"/bin/sh", "-c", `setsid sleep 300 & exec "$0"`, testBinary()}
	a := New(spec, Options{Logger: testLogger(), Ports: testPorts, Reaper: testReaper})
	a.Start()
	pids := waitReady(t, a, 1)
	var sleep int
	eventually(t, 5*time.Second, "the setsid sleep", func() bool {
		if kids := childrenOf(pids["web-1"]); len(kids) == 1 {
			sleep = kids[0]
		}
		return sleep != 0
	})
	defer unix.Kill(sleep, syscall.SIGKILL) // only when the check below failed
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !processGone(sleep) {
		t.Errorf("the setsid sleep %d outlived Stop", sleep)
	}
	if !processGone(pids["web-1"]) {
		t.Error("worker survived Stop")
	}
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// TestGroupKilledBeforeLeaderReaped: when a worker's leader dies while its
// child lives, the child is killed before the leader is reaped, so the
// group id is never free while the group is signalled (issue 10, item 10).
func TestGroupKilledBeforeLeaderReaped(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.Command = []string{"/bin/sh", "-c", `sleep 300 & exec "$0"`, testBinary()}
	a := startApp(t, spec)
	pid := waitReady(t, a, 1)["web-1"]
	var sleep int
	eventually(t, 5*time.Second, "the sleep child", func() bool {
		if kids := childrenOf(pid); len(kids) == 1 {
			sleep = kids[0]
		}
		return sleep != 0
	})
	defer unix.Kill(sleep, syscall.SIGKILL) // only when the check below failed
	if err := unix.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A tight loop, bounded: the window to catch on the old code was short.
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The leader first, then the child: a child seen alive after the
		// leader was seen reaped was alive when the leader was reaped.
		_, err := os.Stat("/proc/" + strconv.Itoa(pid))
		reaped := errors.Is(err, os.ErrNotExist)
		if reaped {
			if alive(sleep) {
				t.Fatalf("leader %d was reaped while its child %d still ran", pid, sleep)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("leader not reaped in 10s")
		}
	}
	eventually(t, 5*time.Second, "the child reaped", func() bool { return processGone(sleep) })
}
