package pool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/corral-dev/corral/config"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// process is one started worker process, the shim above it and its output
// pipes.
type process struct {
	pid int // the worker's, leader of its process group
	// exited receives the worker's wait status once.
	exited <-chan syscall.WaitStatus
	// shimDone is closed once the shim is reaped: nothing of the worker's
	// tree is left.
	shimDone chan struct{}
	// readers are the parent's read ends of stdout and stderr.
	readers   []*os.File
	closeOnce sync.Once
	// logsDone is closed when both readers reached EOF.
	logsDone chan struct{}
	// output bounds what of the output is logged.
	output *outputLimit
}

// buildCommand turns spec into the command for one worker listening on
// addr: its port replaces {port}, or its socket path {socket}, and is set
// as PORT (Node's listen(process.env.PORT) takes either); a socket path is
// also CORRAL_SOCKET. A background app's (no address) sets no PORT and
// replaces nothing.
func buildCommand(spec *config.App, slotID string, addr listenAddr) (*exec.Cmd, error) {
	if len(spec.Command) == 0 {
		return nil, errors.New("empty command")
	}
	p := strconv.Itoa(addr.port)
	argv := make([]string, len(spec.Command))
	for i, arg := range spec.Command {
		if addr.port > 0 {
			arg = strings.ReplaceAll(arg, "{port}", p)
		}
		if addr.socket != "" {
			arg = strings.ReplaceAll(arg, "{socket}", addr.socket)
		}
		argv[i] = arg
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if path, ok := spec.Env["PATH"]; ok && !strings.Contains(argv[0], "/") {
		// exec.Command looked in corral's PATH; the worker's own is the one
		// its command is meant to be found in.
		found, err := lookPath(argv[0], path, spec.Dir)
		if err != nil {
			return nil, err
		}
		cmd.Path, cmd.Err = found, nil
	}
	cmd.Dir = spec.Dir
	env := inheritedEnv(os.Environ())
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
	}
	switch {
	case addr.socket != "":
		env = append(env, "PORT="+addr.socket, "CORRAL_SOCKET="+addr.socket)
	case addr.port > 0:
		env = append(env, "PORT="+p)
	}
	env = append(env, "CORRAL_APP="+spec.Name, "CORRAL_WORKER="+slotID)
	cmd.Env = env
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if spec.User != "" || spec.Group != "" {
		cred, err := credential(spec.User, spec.Group)
		if err != nil {
			return nil, err
		}
		attr.Credential = cred
	}
	cmd.SysProcAttr = attr
	return cmd, nil
}

// inheritedEnv is the part of corral's environment a worker inherits:
// all but the variables meant for corral alone. Those are its own
// (CORRAL_*: the admin token would let a worker drive the admin API, and
// CORRAL_CONFIG would make a corral run as a worker read this one's file)
// and systemd's, which name corral's pid and descriptors (systemdEnv). An
// app's env may still set any of them.
func inheritedEnv(environ []string) []string {
	out := environ[:0:0]
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "CORRAL_") || slices.Contains(systemdEnv, name) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// systemdEnv are the variables systemd sets for the service's main
// process: the notify socket and watchdog, and socket activation's.
var systemdEnv = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}

// lookPath finds the executable file name in the directories of path, as
// a shell started in dir would: relative entries are relative to dir.
func lookPath(name, path, dir string) (string, error) {
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		if !filepath.IsAbs(d) {
			d = filepath.Join(dir, d)
		}
		p := filepath.Join(d, name)
		if info, err := os.Stat(p); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("looking up %q: %w in the app's PATH %q", name, exec.ErrNotFound, path)
}

// credential looks up the uid, gid and supplementary groups to run as.
func credential(userName, groupName string) (*syscall.Credential, error) {
	cred := &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			return nil, fmt.Errorf("looking up user %q: %w", userName, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		cred.Uid, cred.Gid = uint32(uid), uint32(gid)
		if ids, err := u.GroupIds(); err == nil {
			for _, g := range ids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					cred.Groups = append(cred.Groups, uint32(n))
				}
			}
		}
	}
	if groupName != "" {
		g, err := user.LookupGroup(groupName)
		if err != nil {
			return nil, fmt.Errorf("looking up group %q: %w", groupName, err)
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		cred.Gid = uint32(gid)
	}
	return cred, nil
}

// startProcess starts cmd below a shim, through the reaper, with its stdout
// and stderr piped into log line by line within lim's bounds. The readers
// run on wg and end at EOF or when closeLogs closes the read ends.
func startProcess(r *Reaper, cmd *exec.Cmd, log hclog.Logger, lim *outputLimit, wg *sync.WaitGroup) (*process, error) {
	if cmd.Err != nil {
		return nil, cmd.Err // not found in corral's PATH
	}
	stR, stW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating status pipe: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("creating stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("creating stderr pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	shimPID, shimExited, err := r.Start(shimCommand(cmd, stW))
	// The child has its own copies; the parent's write ends must go or the
	// readers never see EOF.
	outW.Close()
	errW.Close()
	stW.Close()
	if err == nil {
		br := bufio.NewReader(stR)
		var pid int
		if pid, err = readShimStart(br, stR); err == nil {
			return startLogs(r, pid, br, stR, shimExited, []*os.File{outR, errR}, log, lim, wg), nil
		}
		if !strings.HasPrefix(err.Error(), "starting worker shim") {
			err = fmt.Errorf("starting %s: %w", cmd.Path, err)
		}
		_ = unix.Kill(shimPID, unix.SIGKILL) // a shim that answered wrong or not at all
	}
	stR.Close()
	outR.Close()
	errR.Close()
	return nil, err
}

// startLogs starts the goroutines that follow a started worker: its exit
// from the shim's status pipe, the shim's own end, and its output.
func startLogs(r *Reaper, pid int, br *bufio.Reader, st *os.File, shimExited <-chan syscall.WaitStatus,
	readers []*os.File, log hclog.Logger, lim *outputLimit, wg *sync.WaitGroup) *process {
	exited := make(chan syscall.WaitStatus, 1)
	p := &process{pid: pid, exited: exited, shimDone: make(chan struct{}), readers: readers,
		logsDone: make(chan struct{}), output: lim}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer st.Close()
		ws, ok := readShimExit(br)
		if ok {
			exited <- ws
		}
		select {
		case shimWS := <-shimExited:
			if !ok {
				exited <- shimWS // the shim died without telling: its end is the worker's
			}
		case <-r.done:
			if !ok {
				exited <- syscall.WaitStatus(syscall.SIGKILL)
			}
		}
		close(p.shimDone)
	}()
	outR, errR := readers[0], readers[1]
	log = log.With("pid", pid)
	lim.log = log
	var left atomic.Int32
	left.Store(2)
	read := func(f *os.File, log hclog.Logger) {
		defer wg.Done()
		copyLines(f, log, lim)
		if left.Add(-1) == 0 {
			lim.flush()
			close(p.logsDone)
		}
	}
	wg.Add(2)
	go read(outR, log)
	go read(errR, log.With("stream", "stderr"))
	return p
}

// closeLogs closes the read ends of the output pipes. A grandchild that
// escaped the process group may hold the write ends open forever; closing
// here ends the reader goroutines regardless.
func (p *process) closeLogs() {
	p.closeOnce.Do(func() {
		for _, f := range p.readers {
			f.Close()
		}
	})
}

// signalGroup sends sig to every process of the group led by pgid. ESRCH
// (group already gone) is not an error.
func signalGroup(pgid int, sig syscall.Signal) error {
	err := unix.Kill(-pgid, sig)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signalling process group %d: %w", pgid, err)
	}
	return nil
}

// groupGone reports whether no process of the group led by pgid is left.
func groupGone(pgid int) bool {
	return errors.Is(unix.Kill(-pgid, 0), unix.ESRCH)
}
