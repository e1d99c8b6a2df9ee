package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Binaries built once by TestMain for the end-to-end tests.
var (
	corralBin  string
	testappBin string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "corral-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	corralBin = filepath.Join(dir, "corral")
	testappBin = filepath.Join(dir, "testapp")
	// CORRAL_E2E_RACE=1 builds corral with the race detector, so the
	// end-to-end tests also check the real wiring for data races.
	corralArgs := []string{"build", "-o", corralBin}
	if os.Getenv("CORRAL_E2E_RACE") != "" {
		corralArgs = append(corralArgs, "-race")
	}
	for _, args := range [][]string{append(corralArgs, "."), {"build", "-o", testappBin, "./testdata/testapp"}} {
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "go %v: %v\n%s", args, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var portBlock atomic.Int32

// workerPorts gives each test its own range of worker ports, below Linux's
// ephemeral range so no outgoing connection can hold one.
func workerPorts() string {
	n := int(portBlock.Add(1))
	first := 21000 + (n%200)*50
	return fmt.Sprintf("%d-%d", first, first+49)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockedBuffer collects corral's log output for failure messages.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// corralProc is one `corral run` started by a test.
type corralProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	config string
	public string
	admin  string
	ports  string
	log    *lockedBuffer
	env    []string // added to corral's environment
	// extraFiles are passed to corral as descriptors 3, 4, ... (what a
	// parent that forgot close-on-exec leaves it).
	extraFiles []*os.File
	logFile    *os.File // when set, corral writes its log here directly, not through a pipe
	exited     chan struct{}
	exitErr    error
}

// configVars are substituted into test configs: {public}, {admin},
// {ports}, {testapp}, {dir}.
func (c *corralProc) expand(tmpl string) string {
	return strings.NewReplacer("{public}", c.public, "{admin}", c.admin, "{ports}", c.ports,
		"{testapp}", testappBin, "{dir}", c.dir).Replace(tmpl)
}

// writeConfig writes the config file in place (truncate and write).
func (c *corralProc) writeConfig(tmpl string) {
	c.t.Helper()
	if err := os.WriteFile(c.config, []byte(c.expand(tmpl)), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// newCorral writes tmpl as the config and starts corral on it.
func newCorral(t *testing.T, tmpl string, wrap ...string) *corralProc {
	t.Helper()
	c := prepareCorral(t)
	c.writeConfig(tmpl)
	c.start(wrap...)
	return c
}

// prepareCorral picks the addresses and the directory of a corral to start.
func prepareCorral(t *testing.T) *corralProc {
	t.Helper()
	c := &corralProc{
		t:      t,
		dir:    t.TempDir(),
		public: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		admin:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		ports:  workerPorts(),
		log:    &lockedBuffer{},
		exited: make(chan struct{}),
	}
	c.config = filepath.Join(c.dir, "config.hcl")
	return c
}

// start runs corral on c.config; wrap prefixes the command line (unshare).
func (c *corralProc) start(wrap ...string) {
	t := c.t
	t.Helper()
	argv := append(append([]string{}, wrap...), corralBin, "run", "-config", c.config)
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if c.logFile != nil {
		c.cmd.Stdout, c.cmd.Stderr = c.logFile, c.logFile
	}
	if len(c.env) > 0 {
		c.cmd.Env = append(os.Environ(), c.env...)
	}
	c.cmd.ExtraFiles = c.extraFiles
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.exitErr = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.exited
		}
		if strings.Contains(c.logText(), "WARNING: DATA RACE") {
			t.Errorf("the race detector fired in corral")
		}
		if t.Failed() {
			t.Logf("corral log:\n%s", c.logText())
		}
	})
}

// logText returns what corral has logged so far.
func (c *corralProc) logText() string {
	if c.logFile != nil {
		data, _ := os.ReadFile(c.logFile.Name())
		return string(data)
	}
	return c.log.String()
}

// waitReady waits until /readyz answers 200.
func (c *corralProc) waitReady(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "corral ready", func() bool {
		select {
		case <-c.exited:
			c.t.Fatalf("corral exited early: %v\n%s", c.exitErr, c.logText())
		default:
		}
		resp, err := http.Get("http://" + c.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// waitAdmin waits until the admin API answers /healthz with 200 (corral
// runs, whether or not its apps are ready).
func (c *corralProc) waitAdmin(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "the admin API", func() bool {
		resp, err := http.Get("http://" + c.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// signal sends sig to corral.
func (c *corralProc) signal(sig syscall.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatal(err)
	}
}

// wait waits for corral to exit and returns its exit code.
func (c *corralProc) wait(timeout time.Duration) int {
	c.t.Helper()
	select {
	case <-c.exited:
	case <-time.After(timeout):
		c.t.Fatalf("corral did not exit within %s", timeout)
	}
	if c.exitErr == nil {
		return 0
	}
	if ee, ok := c.exitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	c.t.Fatalf("waiting for corral: %v", c.exitErr)
	return -1
}

// Status types as a client sees the JSON, declared here so the tests check
// the wire format rather than the Go types.
type wireStatus struct {
	ShuttingDown bool `json:"shutting_down"`
	LastReload   *struct {
		Applied  bool     `json:"applied"`
		Trigger  string   `json:"trigger"`
		Changes  string   `json:"changes"`
		Problems []string `json:"problems"`
		Error    string   `json:"error"`
	} `json:"last_reload"`
	Apps []wireApp `json:"apps"`
}

type wireApp struct {
	Name      string         `json:"name"`
	Instances int            `json:"instances"`
	Ready     int            `json:"ready"`
	Workers   []wireWorker   `json:"workers"`
	Autoscale *wireAutoscale `json:"autoscale"`
	Roll      struct {
		State   string `json:"state"`
		Message string `json:"message"`
	} `json:"roll"`
}

type wireWorker struct {
	ID        string         `json:"id"`
	PID       int            `json:"pid"`
	Port      int            `json:"port"`
	Socket    string         `json:"socket"`
	State     string         `json:"state"`
	Reason    string         `json:"reason"`
	Restarts  int            `json:"restarts"`
	ByCause   map[string]int `json:"replacements"`
	Inflight  int            `json:"inflight"`
	StartedAt time.Time      `json:"started_at"`
	// MemoryBytes and CPUSeconds are the sampled process-group figures.
	MemoryBytes int64   `json:"memory_bytes"`
	CPUSeconds  float64 `json:"cpu_seconds"`
}

// inflight returns the in-flight count /status shows for worker id.
func (c *corralProc) inflight(id string) int {
	n := 0
	for _, w := range c.app("web").Workers {
		if w.ID == id {
			n += w.Inflight
		}
	}
	return n
}

func (c *corralProc) status() wireStatus {
	c.t.Helper()
	resp, err := http.Get("http://" + c.admin + "/status")
	if err != nil {
		c.t.Fatalf("GET /status: %v", err)
	}
	defer resp.Body.Close()
	var s wireStatus
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		c.t.Fatalf("decoding /status: %v", err)
	}
	return s
}

func (c *corralProc) app(name string) wireApp {
	c.t.Helper()
	for _, a := range c.status().Apps {
		if a.Name == name {
			return a
		}
	}
	c.t.Fatalf("app %s not in /status", name)
	return wireApp{}
}

// readyPIDs returns the pids of an app's ready workers, by worker id.
func (c *corralProc) readyPIDs(name string) map[string]int {
	pids := map[string]int{}
	for _, w := range c.app(name).Workers {
		if w.State == "ready" {
			pids[w.ID] = w.PID
		}
	}
	return pids
}

// allPIDs returns the pid of every worker process the app has.
func (c *corralProc) allPIDs(name string) []int {
	var pids []int
	for _, w := range c.app(name).Workers {
		if w.PID > 0 {
			pids = append(pids, w.PID)
		}
	}
	return pids
}

type appReply struct {
	Worker   string `json:"worker"`
	PID      int    `json:"pid"`
	Greeting string `json:"greeting"`
}

// get fetches path through corral's public port.
func (c *corralProc) get(client *http.Client, path string) (appReply, int, error) {
	resp, err := client.Get("http://" + c.public + path)
	if err != nil {
		return appReply{}, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return appReply{}, resp.StatusCode, err
	}
	var r appReply
	if resp.StatusCode == 200 {
		json.Unmarshal(body, &r)
	}
	return r, resp.StatusCode, nil
}

// loadResult counts what a load run saw.
type loadResult struct {
	OK, Failed int64
	Errors     []string
	Workers    map[string]bool
}

// runLoad sends GETs from several keep-alive clients until stop is called,
// at most for limit and at most maxPerClient requests each.
func (c *corralProc) runLoad(clients int, limit time.Duration) (stop func() loadResult) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	var (
		mu  sync.Mutex
		res = loadResult{Workers: map[string]bool{}}
		wg  sync.WaitGroup
	)
	const maxPerClient = 200000
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			for n := 0; n < maxPerClient && ctx.Err() == nil; n++ {
				r, code, err := c.get(client, "/")
				mu.Lock()
				switch {
				case err == nil && code == 200:
					res.OK++
					res.Workers[r.Worker+"/"+fmt.Sprint(r.PID)] = true
				default:
					res.Failed++
					if len(res.Errors) < 10 {
						res.Errors = append(res.Errors, fmt.Sprintf("status %d err %v at %s", code, err, time.Now().Format("15:04:05.000")))
					}
				}
				mu.Unlock()
				time.Sleep(time.Millisecond)
			}
		}()
	}
	return func() loadResult {
		cancel()
		wg.Wait()
		return res
	}
}

// processGone reports whether pid no longer exists; a zombie still
// answers kill(pid, 0), so it counts as left behind.
func processGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
