package pool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// ErrReaperStopped is returned by Reaper.Start once the reaper's Run has ended.
var ErrReaperStopped = errors.New("reaper stopped")

// reapInterval is a safety net: SIGCHLD can coalesce, and a missed one must
// not leave a zombie for long.
const reapInterval = time.Second

// Reaper is corral's one reaping loop. It waits for every child (workers and
// orphaned grandchildren reparented to corral), so nobody else may call
// Wait on a worker: each exit is handed to the worker that owns the pid.
//
// Worker shims are also forked by the Reaper's goroutine, which is locked to
// its OS thread for as long as Run runs. Pdeathsig fires when the thread
// that forked a child exits, so tying every fork to this one long-lived
// thread means shims get their signal (and kill their worker's tree)
// exactly when the reaper (and corral) goes away, never because some random
// runtime thread was retired.
type Reaper struct {
	log    hclog.Logger
	starts chan startRequest
	done   chan struct{} // closed when Run returns
	owners map[int]chan syscall.WaitStatus
}

type startRequest struct {
	cmd   *exec.Cmd
	reply chan startReply
}

type startReply struct {
	pid    int
	exited chan syscall.WaitStatus
	err    error
}

// NewReaper returns a reaper; on Linux it makes corral a child subreaper so
// orphaned grandchildren of workers are reparented to corral and reaped here.
func NewReaper(log hclog.Logger) *Reaper {
	if !strings.HasSuffix(log.Name(), "pool") {
		log = log.Named("pool")
	}
	log = log.Named("reaper")
	if err := setSubreaper(); err != nil {
		log.Warn("cannot become child subreaper", "error", err)
	}
	return &Reaper{
		log:    log,
		starts: make(chan startRequest),
		done:   make(chan struct{}),
		owners: make(map[int]chan syscall.WaitStatus),
	}
}

// Run reaps children until ctx is done. Call it once; Start works only
// while Run runs. When Run returns, its OS thread exits and any child still
// alive receives its Pdeathsig.
func (r *Reaper) Run(ctx context.Context) {
	runtime.LockOSThread()
	// No UnlockOSThread: the thread dies with this goroutine, which is what
	// fires Pdeathsig on children that outlived the shutdown.
	defer close(r.done)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	tick := time.NewTicker(reapInterval)
	defer tick.Stop()

	r.reapOnce()
	for {
		select {
		case <-ctx.Done():
			r.reapOnce()
			return
		case req := <-r.starts:
			req.reply <- r.start(req.cmd)
		case <-sigs:
			r.reapOnce()
		case <-tick.C:
			r.reapOnce()
		}
	}
}

// reapOnce reaps every child that has exited, without blocking. Only Run's
// goroutine may call it: it owns the pid registry.
func (r *Reaper) reapOnce() {
	for {
		var ws unix.WaitStatus
		var ru unix.Rusage
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, &ru)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited yet
		}
		if ch, ok := r.owners[pid]; ok {
			delete(r.owners, pid)
			ch <- syscall.WaitStatus(ws)
			continue
		}
		r.log.Debug("reaped orphan", "pid", pid, "status", describeExit(syscall.WaitStatus(ws)))
	}
}

// Start starts cmd on the reaper's thread and registers its pid before any
// reaping can happen, so the exit can never be lost. exited receives the
// leader's wait status exactly once. Never call cmd.Wait.
func (r *Reaper) Start(cmd *exec.Cmd) (pid int, exited <-chan syscall.WaitStatus, err error) {
	req := startRequest{cmd: cmd, reply: make(chan startReply, 1)}
	select {
	case r.starts <- req:
	case <-r.done:
		return 0, nil, ErrReaperStopped
	}
	rep := <-req.reply
	return rep.pid, rep.exited, rep.err
}

// start runs on Run's goroutine, which is also the only one reaping, so the
// child cannot be reaped between fork and registration.
func (r *Reaper) start(cmd *exec.Cmd) startReply {
	if err := cmd.Start(); err != nil {
		return startReply{err: err}
	}
	pid := cmd.Process.Pid
	// The reaper waits for the child; drop the os.Process handle (pidfd) now.
	_ = cmd.Process.Release()
	ch := make(chan syscall.WaitStatus, 1)
	r.owners[pid] = ch
	return startReply{pid: pid, exited: ch}
}

func setSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("setting child subreaper: %w", err)
	}
	return nil
}

// describeExit formats a wait status the way os.ProcessState does:
// "exit status 1", "signal: killed".
func describeExit(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "signal: " + ws.Signal().String()
	default:
		return fmt.Sprintf("wait status %#x", uint32(ws))
	}
}
