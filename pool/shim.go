package pool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A worker shim is corral's own binary, re-executed as the parent of one
// worker. It exists for what the kernel does not do by itself:
//
//   - It is a child subreaper, so every process of the worker's tree, a
//     daemon that did setsid included, stays below it and is killed when
//     the worker is stopped or crashes.
//   - Its parent-death signal comes from corral; when corral dies, even by
//     SIGKILL, it kills the whole tree (Pdeathsig alone reaches only a
//     direct child, not `sh -c` grandchildren or a `go run` server).
//   - It keeps the worker's exited leader unreaped until the rest of its
//     process group is gone, so the group id cannot be reused while corral
//     may still signal it.
//
// The shim talks to corral over a pipe (fd 3) in lines: "pid N" once the
// worker runs (or "err MSG" when it could not start), then "exit W" with the
// worker's wait status. It exits when nothing of the tree is left.
const (
	// shimName is argv[0] of a shim; RunShim looks for it.
	shimName = "corral-shim"
	// shimFD is the status pipe's descriptor in the shim.
	shimFD = 3
	// shimPoll is how often the shim looks at the tree while it winds down;
	// before that, SIGCHLD wakes it and shimIdle is a safety net.
	shimPoll = 20 * time.Millisecond
	shimIdle = time.Second
	// escapedGrace is how long processes that left the worker's group get
	// between SIGTERM and SIGKILL once the group is gone.
	escapedGrace = time.Second
	// shimStartTimeout bounds the wait for the shim's "pid" line.
	shimStartTimeout = 10 * time.Second
)

// RunShim turns this process into a worker shim and exits when it was
// started as one; otherwise it returns at once. Every binary that runs a
// pool calls it first thing in main (and in TestMain), because the pool
// starts its workers through /proc/self/exe.
func RunShim() {
	if len(os.Args) < 2 || os.Args[0] != shimName {
		return
	}
	os.Exit(runShim(os.Args[1:]))
}

// shimCommand wraps cmd (already built for the worker) so that it starts a
// shim that starts the worker. status is the write end of the status pipe.
func shimCommand(cmd *exec.Cmd, status *os.File) *exec.Cmd {
	sh := exec.Command("/proc/self/exe")
	sh.Args = append([]string{shimName, cmd.Path}, cmd.Args...)
	sh.Dir, sh.Env = cmd.Dir, cmd.Env
	sh.Stdout, sh.Stderr = cmd.Stdout, cmd.Stderr
	sh.ExtraFiles = []*os.File{status}
	attr := *cmd.SysProcAttr
	// Its own group: a terminal's Ctrl-C goes to corral alone. SIGTERM, not
	// SIGKILL, on corral's death, so the shim can kill the tree first.
	attr.Setpgid, attr.Pdeathsig = true, syscall.SIGTERM
	sh.SysProcAttr = &attr
	return sh
}

// runShim is the shim's main: args are the worker's path and argv.
func runShim(args []string) int {
	status := os.NewFile(shimFD, "status")
	syscall.CloseOnExec(shimFD)
	if len(args) < 2 {
		fmt.Fprintln(status, "err shim: no command")
		return 2
	}
	parent := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(status, "err shim: %v\n", err)
		return 2
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	cmd := &exec.Cmd{Path: args[0], Args: args[1:], Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(status, "err %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return 127
	}
	leader := cmd.Process.Pid
	_ = cmd.Process.Release() // reaped below, with WNOWAIT first
	fmt.Fprintf(status, "pid %d\n", leader)
	if os.Getppid() != parent {
		killTree(leader)
		return 1
	}

	tick := time.NewTicker(shimIdle)
	defer tick.Stop()
	exited := false
	for {
		select {
		case s := <-sigs:
			if s != syscall.SIGCHLD {
				killTree(leader) // corral is gone (or someone asked the shim to go)
				return 1
			}
		case <-tick.C:
		}
		if os.Getppid() != parent {
			killTree(leader)
			return 1
		}
		reapExcept(leader)
		if !exited {
			ws, ok := peekExit(leader)
			if !ok {
				continue
			}
			exited = true
			fmt.Fprintf(status, "exit %d\n", uint32(ws))
			tick.Reset(shimPoll)
		}
		if groupAlive(leader) {
			continue // corral signals the group; its id stays ours meanwhile
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(leader, &ws, 0, nil)
		endEscaped()
		return 0
	}
}

// peekExit reports the wait status of pid once it has exited, leaving it
// unreaped (a zombie) so its pid and process group id stay taken.
func peekExit(pid int) (syscall.WaitStatus, bool) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return 0, false
		}
		break
	}
	c := (*sigchldInfo)(unsafe.Pointer(&info))
	if c.pid == 0 {
		return 0, false // still running
	}
	switch c.code {
	case cldExited:
		return syscall.WaitStatus(c.status&0xff) << 8, true
	case cldDumped:
		return syscall.WaitStatus(c.status&0x7f | 0x80), true
	default:
		return syscall.WaitStatus(c.status & 0x7f), true
	}
}

// sigchldInfo is the SIGCHLD layout of siginfo_t on Linux.
type sigchldInfo struct {
	signo, errno, code int32
	_                  int32
	pid                int32
	uid                uint32
	status             int32
}

const (
	cldExited = 1
	cldDumped = 3
)

// reapExcept reaps every exited child of the shim except keep.
func reapExcept(keep int) {
	for _, pid := range childPIDs(os.Getpid()) {
		if pid == keep {
			continue
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
	}
}

// childPIDs lists the children of pid from /proc/PID/task/*/children.
func childPIDs(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, _ := os.ReadDir(dir)
	var kids []int
	for _, t := range tasks {
		b, _ := os.ReadFile(dir + "/" + t.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

// tree returns every descendant of pid.
func tree(pid int) []int {
	var out []int
	queue := childPIDs(pid)
	for len(queue) > 0 {
		p := queue[0]
		queue = append(queue[1:], childPIDs(p)...)
		out = append(out, p)
	}
	return out
}

// procStat returns the state and process group of pid.
func procStat(pid int) (state byte, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The comm field may hold spaces; fields after the last ')' are fixed.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 3 {
		return 0, 0, false
	}
	pgrp, _ = strconv.Atoi(f[2])
	return f[0][0], pgrp, true
}

// groupAlive reports whether a live process other than the leader is in
// the leader's group. Every member is below the shim, its subreaper.
func groupAlive(leader int) bool {
	for _, p := range tree(os.Getpid()) {
		if state, pgrp, ok := procStat(p); ok && p != leader && pgrp == leader && state != 'Z' {
			return true
		}
	}
	return false
}

// liveTree returns the descendants of the shim that are not zombies.
func liveTree() []int {
	var live []int
	for _, p := range tree(os.Getpid()) {
		if state, _, ok := procStat(p); ok && state != 'Z' {
			live = append(live, p)
		}
	}
	return live
}

// endEscaped stops what is left below the shim once the worker's group is
// gone: processes that left the group (setsid). SIGTERM, then SIGKILL
// after escapedGrace; every one is reaped.
func endEscaped() {
	left := liveTree()
	if len(left) == 0 {
		reapExcept(0)
		return
	}
	for _, p := range left {
		_ = unix.Kill(p, unix.SIGTERM)
	}
	deadline := time.Now().Add(escapedGrace)
	for time.Now().Before(deadline) && len(liveTree()) > 0 {
		reapExcept(0)
		time.Sleep(shimPoll) // the shim's own poll; nothing to wake it
	}
	killAllBelow()
}

// killTree SIGKILLs the worker's group and every process below the shim,
// and reaps them all.
func killTree(leader int) {
	_ = unix.Kill(-leader, unix.SIGKILL)
	killAllBelow()
}

// killAllBelow SIGKILLs every process below the shim until none is left
// (a process may fork while the kill goes round) and reaps them.
func killAllBelow() {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		left := liveTree()
		for _, p := range left {
			_ = unix.Kill(p, unix.SIGKILL)
		}
		reapExcept(0)
		if len(left) == 0 && len(childPIDs(os.Getpid())) == 0 {
			return
		}
		time.Sleep(shimPoll)
	}
}

// readShimStart reads the shim's first line: the worker's pid, or why it
// could not start.
func readShimStart(br *bufio.Reader, f *os.File) (int, error) {
	_ = f.SetReadDeadline(time.Now().Add(shimStartTimeout))
	line, err := br.ReadString('\n')
	_ = f.SetReadDeadline(time.Time{})
	if err != nil {
		return 0, fmt.Errorf("starting worker shim: %w", err)
	}
	line = strings.TrimSpace(line)
	if msg, ok := strings.CutPrefix(line, "err "); ok {
		return 0, errors.New(msg)
	}
	if s, ok := strings.CutPrefix(line, "pid "); ok {
		if pid, err := strconv.Atoi(s); err == nil && pid > 0 {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("starting worker shim: unexpected %q", line)
}

// readShimExit reads the worker's wait status; false when the shim ended
// without sending one.
func readShimExit(br *bufio.Reader) (syscall.WaitStatus, bool) {
	for {
		line, err := br.ReadString('\n')
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "exit "); ok {
			if n, err := strconv.ParseUint(s, 10, 32); err == nil {
				return syscall.WaitStatus(n), true
			}
		}
		if err != nil {
			return 0, false
		}
	}
}
