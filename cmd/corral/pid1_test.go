package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is one process as /proc shows it from the host's PID namespace.
type proc struct {
	pid, ppid, pgid int
	state           byte
	comm            string
}

func readProcs() map[int]proc {
	out := map[int]proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split at the last ')'.
		s := string(data)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < 0 || end+4 > len(s) {
			continue
		}
		fields := strings.Fields(s[end+2:])
		if len(fields) < 3 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		pgid, _ := strconv.Atoi(fields[2])
		out[pid] = proc{pid: pid, ppid: ppid, pgid: pgid, state: fields[0][0], comm: s[open+1 : end]}
	}
	return out
}

// descendants returns every process below root.
func descendants(root int) []proc {
	procs := readProcs()
	children := map[int][]proc{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
	}
	var out []proc
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, ch := range children[pid] {
			out = append(out, ch)
			queue = append(queue, ch.pid)
		}
	}
	return out
}

// hostPID maps a pid of a child PID namespace to the host's pid, through
// the NSpid line of /proc/PID/status.
func hostPID(below int, nsPID int) int {
	for _, p := range descendants(below) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fields := strings.Fields(sc.Text()); len(fields) >= 3 && fields[0] == "NSpid:" {
				if last, _ := strconv.Atoi(fields[len(fields)-1]); last == nsPID {
					f.Close()
					return p.pid
				}
			}
		}
		f.Close()
	}
	return 0
}

// rootUnshare returns the path of unshare, or skips the test when it is
// not installed or the test does not run as root, which it needs for what.
func rootUnshare(t *testing.T, what string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("needs root %s; CI runs as root", what)
	}
	path, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	return path
}

// unshareAsPID1 returns the wrapper that starts corral as PID 1 of a new
// PID namespace, or skips the test when this machine cannot do that.
func unshareAsPID1(t *testing.T) []string {
	t.Helper()
	path := rootUnshare(t, "to create a PID namespace (unshare --pid)")
	if out, err := exec.Command(path, "--pid", "--fork", "--mount-proc", "true").CombinedOutput(); err != nil {
		t.Skipf("this sandbox cannot create PID namespaces: %v %s", err, out)
	}
	return []string{path, "--pid", "--fork", "--mount-proc"}
}

// orphanMaker's workers each start a sleep that holds the FIFO open for
// writing: the test reads it, and its end of file says that every sleep is
// gone.
const orphanMaker = `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
shutdown { timeout = "10s" }
app "web" {
  command      = ["sh", "-c", "sleep 300 > FIFO & exec {testapp}"]
  instances    = 2
  stop_timeout = "5s"
  backoff {
    min = "50ms"
    max = "1s"
  }
}
`

// stoppedLine is what corral logs last, once its shutdown is complete.
const stoppedLine = "corral: stopped:"

func TestPID1ReapsOrphansAndExitsCleanly(t *testing.T) {
	wrap := unshareAsPID1(t)
	c := prepareCorral(t)
	fifo := filepath.Join(c.dir, "sleeps.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Open before any writer, without blocking: the sleeps' opens for
	// writing then never block.
	sleeps, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer sleeps.Close()
	// The log goes straight to a file, so what corral wrote before an
	// event is there to read after it.
	if c.logFile, err = os.Create(filepath.Join(c.dir, "corral.log")); err != nil {
		t.Fatal(err)
	}
	defer c.logFile.Close()
	c.writeConfig(strings.ReplaceAll(orphanMaker, "FIFO", fifo))
	c.start(wrap...)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })

	unsharePID := c.cmd.Process.Pid
	var corral int
	waitFor(t, 5*time.Second, "corral as PID 1 of the namespace", func() bool {
		corral = hostPID(unsharePID, 1)
		return corral != 0
	})

	// Crash a worker: its `sleep` grandchild is orphaned to corral.
	nsPID := c.readyPIDs("web")["web-1"]
	victim := hostPID(corral, nsPID)
	if victim == 0 {
		t.Fatalf("no host pid for worker pid %d", nsPID)
	}
	syscall.Kill(victim, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "web-1 replaced", func() bool {
		pids := c.readyPIDs("web")
		return len(pids) == 2 && pids["web-1"] != nsPID
	})
	waitFor(t, 10*time.Second, "no zombie under corral", func() bool {
		for _, p := range descendants(corral) {
			if p.state == 'Z' {
				return false
			}
		}
		return true
	})
	// A sleep shows as "sleep" once its shell has opened the FIFO and
	// exec'd it.
	waitFor(t, 10*time.Second, "a sleep under each worker", func() bool {
		n := 0
		for _, p := range descendants(corral) {
			if p.comm == "sleep" {
				n++
			}
		}
		return n >= 2
	})

	// Tearing down the PID namespace when corral exits kills whatever is
	// left, so "gone after the exit" proves nothing. The FIFO's end of file
	// comes when the last sleep is gone; if corral had already logged that
	// it stopped, the sleeps outlived its shutdown and died with the
	// namespace.
	stoppedFirst := make(chan bool, 1)
	go func() {
		io.Copy(io.Discard, sleeps)
		stoppedFirst <- strings.Contains(c.logText(), stoppedLine)
	}()
	if err := syscall.Kill(corral, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := c.wait(20 * time.Second); code != 0 {
		t.Fatalf("PID 1 corral exited %d after SIGTERM, want 0", code)
	}
	select {
	case first := <-stoppedFirst:
		if first {
			t.Errorf("a worker's sleep outlived corral's shutdown: only the namespace teardown killed it")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a sleep is still holding the FIFO after corral and its namespace are gone")
	}
	if !strings.Contains(c.logText(), stoppedLine) {
		t.Errorf("corral did not log %q", stoppedLine)
	}
}

const givesUp = `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "web" {
  command         = ["{testapp}"]
  env             = { TESTAPP_MODE = "crash" }
  instances       = 2
  exit_on_failure = "2s"
  backoff {
    min = "50ms"
    max = "200ms"
  }
}
`

func TestExitOnFailureExitsNonZero(t *testing.T) {
	c := newCorral(t, givesUp)
	if code := c.wait(30 * time.Second); code == 0 {
		t.Fatal("corral exited 0 although its app never got a worker ready")
	}
}

func TestExitOnFailureExitsNonZeroAsPID1(t *testing.T) {
	wrap := unshareAsPID1(t)
	c := newCorral(t, givesUp, wrap...)
	if code := c.wait(30 * time.Second); code == 0 {
		t.Fatal("PID 1 corral exited 0 although its app never got a worker ready")
	}
}

func TestRunFailsFastOnABusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	c := newCorral(t, strings.Replace(threeWorkers, "{public}", busy.Addr().String(), 1))
	if code := c.wait(15 * time.Second); code != 1 {
		t.Fatalf("exit code %d with a busy public port, want 1", code)
	}
	if !strings.Contains(c.log.String(), busy.Addr().String()) {
		t.Errorf("the error does not name the busy address:\n%s", c.log.String())
	}
}

// uidOf reads the real uid of pid from /proc.
func uidOf(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) >= 2 && fields[0] == "Uid:" {
			uid, _ := strconv.Atoi(fields[1])
			return uid
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return -1
}

func TestWorkersRunAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running workers as another user needs root; CI runs as root")
	}
	// The test binaries live in a private temp dir; let "nobody" reach them.
	os.Chmod(filepath.Dir(testappBin), 0o755)
	c := newCorral(t, `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "web" {
  command   = ["{testapp}"]
  dir       = "/"
  user      = "nobody"
  instances = 2
}
`)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })
	for id, pid := range c.readyPIDs("web") {
		if uid := uidOf(t, pid); uid != 65534 {
			t.Errorf("worker %s (pid %d) runs as uid %d, want nobody (65534)", id, pid, uid)
		}
	}
	if uid := uidOf(t, c.cmd.Process.Pid); uid != 0 {
		t.Errorf("corral itself runs as uid %d, want root", uid)
	}
}
