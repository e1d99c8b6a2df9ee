package pool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/config"
)

func TestThreeWorkersReady(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 3))
	waitReady(t, a, 3)
	tab := a.Table()
	ports := map[int]bool{}
	for i, b := range tab.Backends {
		if want := fmt.Sprintf("web-%d", i+1); b.ID != want {
			t.Errorf("backend %d is %s, want %s", i, b.ID, want)
		}
		if b.Addr != "127.0.0.1:"+strconv.Itoa(b.Port) {
			t.Errorf("backend %s addr %q does not match port %d", b.ID, b.Addr, b.Port)
		}
		ports[b.Port] = true
	}
	if len(ports) != 3 {
		t.Errorf("ports not distinct: %v", ports)
	}
	if tab.App.Name != "web" || tab.Stats == nil || tab.Version == 0 {
		t.Errorf("table: app %v stats %v version %d", tab.App.Name, tab.Stats, tab.Version)
	}
	if !a.Ready() {
		t.Error("Ready() = false with 3 backends")
	}
	if st := a.Status(); st.Ready != 3 || st.Instances != 3 {
		t.Errorf("status ready %d instances %d, want 3 3", st.Ready, st.Instances)
	}
}

func TestWorkerEnvAndPortArgs(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.Command = append(spec.Command, "--listen=127.0.0.1:{port}", "{port}{port}")
	spec.Env["GREETING"] = "hi"
	a := startApp(t, spec)
	waitReady(t, a, 1)
	b := a.Table().Backends[0]
	var got struct {
		PORT, CORRAL_APP, CORRAL_WORKER string
		Args                            []string
	}
	getJSON(t, "http://"+b.Addr+"/env", &got)
	p := strconv.Itoa(b.Port)
	if got.PORT != p || got.CORRAL_APP != "web" || got.CORRAL_WORKER != "web-1" {
		t.Errorf("env = %+v, want PORT=%s CORRAL_APP=web CORRAL_WORKER=web-1", got, p)
	}
	if want := []string{"--listen=127.0.0.1:" + p, p + p}; !slices.Equal(got.Args, want) {
		t.Errorf("args = %q, want %q", got.Args, want)
	}
}

func TestCrashBackoffGrows(t *testing.T) {
	spec := testSpec(t, "exit", 1)
	spawnLog := filepath.Join(t.TempDir(), "spawns")
	// A shell, not the test binary: its start-up time must not hide the delays.
	spec.Command = []string{"/bin/sh", "-c", `date +%s%N >> "$0"; exit 1`, spawnLog}
	a := startApp(t, spec)
	var spawns []int64
	eventually(t, 15*time.Second, "7 spawns", func() bool {
		b, _ := os.ReadFile(spawnLog)
		spawns = spawns[:0]
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.ParseInt(f, 10, 64)
			spawns = append(spawns, n)
		}
		return len(spawns) >= 7
	})
	var gaps []time.Duration
	for i := 1; i < len(spawns); i++ {
		gaps = append(gaps, time.Duration(spawns[i]-spawns[i-1]))
	}
	t.Logf("gaps between spawns: %v", gaps)
	// Each gap is at least its delay minus the 20% jitter: 50ms doubling up
	// to 400ms. Lower bounds only, so a loaded machine cannot fail the test;
	// a backoff that does not grow fails the later ones.
	want := []time.Duration{50, 100, 200, 400, 400, 400}
	for i, g := range gaps[:len(want)] {
		if min := want[i] * time.Millisecond * 8 / 10; g < min {
			t.Errorf("gap %d is %v, want >= %v (backoff not growing?)", i, g, min)
		}
	}
	_, stats := a.Stats()
	if r := stats["web-1"].Restarts(); r < 6 {
		t.Errorf("restarts = %d, want >= 6", r)
	}
	st := a.Status()
	if len(st.Workers) != 1 || st.Workers[0].Restarts < 6 || st.Workers[0].LastExit == "" {
		t.Errorf("status workers = %+v", st.Workers)
	}
	if a.Ready() {
		t.Error("Ready() = true for an app that never starts")
	}
}

func TestKill9Restarts(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 3))
	before := waitReady(t, a, 3)
	old := a.Table().Backends[1]
	if err := unix.Kill(before["web-2"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var after map[string]int
	eventually(t, 10*time.Second, "web-2 back with a new pid", func() bool {
		var ok bool
		after, ok = readyPIDs(a, 3)
		return ok && after["web-2"] != before["web-2"]
	})
	if after["web-1"] != before["web-1"] || after["web-3"] != before["web-3"] {
		t.Errorf("other workers changed: before %v after %v", before, after)
	}
	tab := a.Table()
	if slices.Contains(tab.Backends, old) || !old.Draining.Load() {
		t.Error("the killed worker's backend is still in rotation")
	}
	if tab.Backends[1].Stats != old.Stats {
		t.Error("the restarted slot lost its stats")
	}
	for _, w := range a.Status().Workers {
		if w.ID == "web-2" && (w.Restarts != 1 || w.LastExit != "signal: killed") {
			t.Errorf("web-2 restarts %d last exit %q, want 1 and signal: killed", w.Restarts, w.LastExit)
		}
	}
}

func TestStopKillsGrandchildren(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.Command = []string{"/bin/sh", "-c", `sleep 300 & exec "$0"`, os.Args[0]}
	a := startApp(t, spec)
	pids := waitReady(t, a, 1)
	var sleep int
	eventually(t, 5*time.Second, "the sleep grandchild", func() bool {
		kids := childrenOf(pids["web-1"])
		if len(kids) == 1 {
			sleep = kids[0]
		}
		return sleep != 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !processGone(sleep) {
		t.Errorf("grandchild sleep %d survived Stop", sleep)
	}
	if !processGone(pids["web-1"]) {
		t.Errorf("worker %d survived Stop", pids["web-1"])
	}
}

func TestStopTimeoutKills(t *testing.T) {
	spec := testSpec(t, "ignoreterm", 1)
	spec.StopTimeout = 500 * time.Millisecond
	a := startApp(t, spec)
	pids := waitReady(t, a, 1)
	start := time.Now()
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < spec.StopTimeout {
		t.Errorf("stop took %v, less than the stop timeout: SIGTERM was not ignored?", took)
	}
	if took > spec.StopTimeout+killGrace+time.Second {
		t.Errorf("stop took %v, far beyond stop timeout %v", took, spec.StopTimeout)
	}
	if !processGone(pids["web-1"]) {
		t.Error("worker ignoring SIGTERM survived Stop")
	}
}

func TestNeverReadyKilledAndRetried(t *testing.T) {
	spec := testSpec(t, "never", 1)
	spec.StartTimeout = 300 * time.Millisecond
	a := startApp(t, spec)
	var sawReason atomic.Bool
	eventually(t, 10*time.Second, "two restarts after start timeouts", func() bool {
		for _, w := range a.Status().Workers {
			if w.State == StateBackoff && w.Reason == "not ready after 300ms" {
				sawReason.Store(true)
			}
			if w.Restarts >= 2 && w.LastExit == "signal: killed" && sawReason.Load() {
				return true
			}
		}
		return false
	})
}

func TestRollingRestart(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 3))
	before := waitReady(t, a, 3)

	// Watch the table during the roll: it must never hold fewer than 3.
	var minLen atomic.Int64
	minLen.Store(3)
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			if n := int64(len(a.Table().Backends)); n < minLen.Load() {
				minLen.Store(n)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := a.Restart(ctx)
	close(stop)
	<-watched
	if err != nil {
		t.Fatal(err)
	}
	if m := minLen.Load(); m < 3 {
		t.Errorf("table shrank to %d backends during the roll", m)
	}
	after := waitReady(t, a, 3)
	for id, pid := range before {
		if after[id] == pid {
			t.Errorf("%s kept pid %d", id, pid)
		}
		if !processGone(pid) {
			t.Errorf("old %s pid %d still exists", id, pid)
		}
	}
	st := a.Status()
	if st.Roll.State != "done" || st.Roll.Finished.IsZero() {
		t.Errorf("roll status = %+v", st.Roll)
	}
	for _, w := range st.Workers {
		if w.Generation != 2 {
			t.Errorf("%s generation %d, want 2", w.ID, w.Generation)
		}
	}
}

func TestRollFailureKeepsOldWorkers(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	a := startApp(t, spec)
	before := waitReady(t, a, 2)

	broken := *spec
	broken.Env = map[string]string{envMode: "never"}
	broken.StartTimeout = 300 * time.Millisecond
	a.Update(&broken)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.Restart(ctx) // coalesces behind the roll Update started
	if err == nil {
		t.Fatal("Restart with a command that never gets ready returned nil")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Restart did not finish: %v", err)
	}
	after := waitReady(t, a, 2)
	if !maps.Equal(before, after) {
		t.Errorf("old workers replaced: before %v after %v", before, after)
	}
	st := a.Status()
	if st.Roll.State != "failed" || !strings.Contains(st.Roll.Message, "not ready after") {
		t.Errorf("roll status = %+v", st.Roll)
	}
}

func TestScaleUpAndDown(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	a := startApp(t, spec)
	two := waitReady(t, a, 2)

	four := *spec
	four.Instances = 4
	a.Update(&four)
	pids := waitReady(t, a, 4)
	if pids["web-1"] != two["web-1"] || pids["web-2"] != two["web-2"] {
		t.Errorf("scale up touched existing workers: %v -> %v", two, pids)
	}
	if a.Table().App != &four {
		t.Error("table does not carry the new spec")
	}

	one := *spec
	one.Instances = 1
	a.Update(&one)
	left := waitReady(t, a, 1)
	if left["web-1"] != two["web-1"] {
		t.Errorf("scale down replaced web-1: %v", left)
	}
	eventually(t, 10*time.Second, "scaled-down workers gone", func() bool {
		return processGone(pids["web-2"]) && processGone(pids["web-3"]) && processGone(pids["web-4"])
	})
	if _, stats := a.Stats(); len(stats) != 4 {
		t.Errorf("stats for %d slots, want 4 (scaled-down slots kept)", len(stats))
	}
}

func TestDrainWaitsForInflight(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.StopTimeout = 20 * time.Second
	a := startApp(t, spec)
	pid := waitReady(t, a, 1)["web-1"]
	b := a.Table().Backends[0]
	b.Inflight.Add(1) // a request the proxy is still forwarding

	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(context.Background()) }()
	eventually(t, 5*time.Second, "worker draining", func() bool {
		st := a.Status()
		return len(st.Workers) == 1 && st.Workers[0].State == StateDraining
	})
	if len(a.Table().Backends) != 0 || !b.Draining.Load() {
		t.Error("draining backend still in rotation")
	}
	if b.Acquire() {
		t.Error("Acquire succeeded on a draining backend")
	}
	// Bounded look: the worker must still be alive while a request is in flight.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if unix.Kill(pid, 0) != nil {
			t.Fatal("worker signalled while a request was in flight")
		}
		select {
		case err := <-stopped:
			t.Fatalf("Stop returned %v before the request finished", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	b.Release()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not finish after the request ended")
	}
	if !processGone(pid) {
		t.Error("worker still present after Stop")
	}
}

func TestExitOnFailureGivesUp(t *testing.T) {
	spec := testSpec(t, "exit", 1)
	spec.ExitOnFailure = 300 * time.Millisecond
	gaveUp := make(chan string, 10)
	start := time.Now()
	startApp(t, spec, func(o *Options) {
		o.OnGiveUp = func(app string, err error) { gaveUp <- app + ": " + err.Error() }
	})
	select {
	case msg := <-gaveUp:
		if !strings.HasPrefix(msg, "web: ") {
			t.Errorf("OnGiveUp got %q", msg)
		}
		if time.Since(start) < spec.ExitOnFailure {
			t.Error("gave up before exit_on_failure passed")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnGiveUp not called")
	}
	// Bounded look for a second call.
	select {
	case msg := <-gaveUp:
		t.Errorf("OnGiveUp called twice: %q", msg)
	case <-time.After(3 * spec.ExitOnFailure):
	}
}

func TestExitOnFailureNotWhileReady(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	// Longer than the worker's start-up, so becoming ready disarms it in time.
	spec.ExitOnFailure = 2 * time.Second
	gaveUp := make(chan struct{}, 1)
	start := time.Now()
	a := startApp(t, spec, func(o *Options) {
		o.OnGiveUp = func(string, error) { gaveUp <- struct{}{} }
	})
	waitReady(t, a, 1)
	if time.Since(start) > spec.ExitOnFailure {
		t.Skip("worker start-up slower than exit_on_failure on this machine")
	}
	select {
	case <-gaveUp:
		t.Fatal("OnGiveUp called for an app with a ready worker")
	case <-time.After(time.Until(start.Add(spec.ExitOnFailure + time.Second))):
	}
}

func TestUnhealthyLeavesRotation(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	sick := filepath.Join(t.TempDir(), "sick")
	spec.Env[envSickFile] = sick
	spec.Health = &config.Health{Type: "http", Path: "/healthz", Interval: 50 * time.Millisecond,
		Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}
	a := startApp(t, spec)
	pids := waitReady(t, a, 2)
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "both workers unhealthy", func() bool {
		st := a.Status()
		return len(a.Table().Backends) == 0 && len(st.Workers) == 2 &&
			st.Workers[0].State == StateUnhealthy && st.Workers[1].State == StateUnhealthy &&
			st.Workers[0].Reason == "status 500"
	})
	if err := os.Remove(sick); err != nil {
		t.Fatal(err)
	}
	back := waitReady(t, a, 2)
	if !maps.Equal(pids, back) {
		t.Errorf("unhealthy workers were restarted: %v -> %v", pids, back)
	}
}

func TestUnhealthyTooLongRestarts(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	sick := filepath.Join(t.TempDir(), "sick")
	spec.Env[envSickFile] = sick
	spec.Health = &config.Health{Type: "http", Path: "/healthz", Interval: 50 * time.Millisecond,
		Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1, RestartAfter: 300 * time.Millisecond}
	a := startApp(t, spec)
	pid := waitReady(t, a, 1)["web-1"]
	if err := os.WriteFile(sick, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "restart of the unhealthy worker", func() bool {
		st := a.Status()
		return len(st.Workers) == 1 && st.Workers[0].PID != pid && st.Workers[0].PID != 0 && st.Workers[0].Restarts == 1
	})
	os.Remove(sick)
	waitReady(t, a, 1)
}

func TestWatchRollsOnChange(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec.Watch = []string{dir}
	spec.WatchDebounce = 50 * time.Millisecond
	a := startApp(t, spec)
	pid := waitReady(t, a, 1)["web-1"]
	if err := os.WriteFile(filepath.Join(dir, "sub", "app.py"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a rolled worker", func() bool {
		p, ok := readyPIDs(a, 1)
		return ok && p["web-1"] != pid && a.Status().Roll.State == "done"
	})
}

func TestRestartCoalesces(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	// Slow candidates keep the first roll running while the others arrive.
	spec.Env[envSlowStart] = "700ms"
	a := startApp(t, spec)
	waitReady(t, a, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 3)
	go func() { errs <- a.Restart(ctx) }()
	eventually(t, 5*time.Second, "the first roll running", func() bool { return a.Status().Roll.State == "running" })
	for range 2 {
		go func() { errs <- a.Restart(ctx) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// The two requests made during the first roll share one more roll:
	// generation 3. Without coalescing each gets its own: 4.
	if g := a.Status().Workers[0].Generation; g != 3 {
		t.Errorf("generation %d after a roll and 2 restarts asked during it, want 3", g)
	}
}

func TestStopIdempotent(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 2))
	waitReady(t, a, 2)
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Restart(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Restart after Stop = %v, want ErrStopped", err)
	}
	if a.Ready() || len(a.Status().Workers) != 0 {
		t.Error("stopped app still shows workers")
	}
}

func TestMissingCommandBacksOff(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	spec.Command = []string{"/nonexistent/corral-test-app", "{port}"}
	a := startApp(t, spec)
	eventually(t, 10*time.Second, "restarts of a command that cannot start", func() bool {
		st := a.Status()
		return len(st.Workers) == 1 && st.Workers[0].State == StateBackoff &&
			strings.Contains(st.Workers[0].Reason, "no such file") && st.Workers[0].Restarts >= 2
	})
	good := startApp(t, testSpec(t, "ok", 1))
	waitReady(t, good, 1) // one failing app never affects another
}

func TestEscapedGrandchildDoesNotBlockStop(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	// setsid puts the sleep outside the worker's process group, holding
	// the output pipes open after the worker is gone.
	spec.Command = []string{"/bin/sh", "-c", `setsid sleep 300 & exec "$0"`, testBinary()}
	a := New(spec, Options{Logger: testLogger(), Ports: testPorts, Reaper: testReaper})
	a.Start()
	pids := waitReady(t, a, 1)
	var sleep int
	eventually(t, 5*time.Second, "the escaped sleep", func() bool {
		if kids := childrenOf(pids["web-1"]); len(kids) == 1 {
			sleep = kids[0]
		}
		return sleep != 0
	})
	defer func() {
		// Stop ends it too (TestStopKillsSetsidDaemon); this is for a failure.
		unix.Kill(sleep, syscall.SIGKILL)
		eventually(t, 5*time.Second, "the escaped sleep reaped", func() bool { return processGone(sleep) })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > spec.StopTimeout+killGrace+logGrace {
		t.Errorf("stop took %v with a grandchild holding the pipes", took)
	}
	if !processGone(pids["web-1"]) {
		t.Error("worker survived Stop")
	}
}

func TestScaleDuringRollAppliesAfter(t *testing.T) {
	spec := testSpec(t, "ok", 1)
	a := startApp(t, spec)
	before := waitReady(t, a, 1)
	next := *spec
	next.Env = map[string]string{envMode: "ok", "VERSION": "2"}
	next.Instances = 2
	a.Update(&next)
	after := waitReady(t, a, 2)
	if after["web-1"] == before["web-1"] {
		t.Error("web-1 was not rolled")
	}
	st := a.Status()
	if st.Roll.State != "done" {
		t.Errorf("roll = %+v", st.Roll)
	}
	for _, w := range st.Workers {
		if w.Generation != 2 {
			t.Errorf("%s generation %d, want 2", w.ID, w.Generation)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's and the test's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestWorkerOutputLogged(t *testing.T) {
	var out syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	withLog := func(o *Options) { o.Logger = log }
	ok := startApp(t, testSpec(t, "ok", 1), withLog)
	pid := waitReady(t, ok, 1)["web-1"]
	eventually(t, 5*time.Second, "the worker's stdout in the log", func() bool {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "pool: worker listening on") && strings.Contains(line, "worker=web-1") &&
				strings.Contains(line, "pid="+strconv.Itoa(pid)) && !strings.Contains(line, "stream=stderr") {
				return true
			}
		}
		return false
	})
	startApp(t, testSpec(t, "exit", 1), withLog)
	eventually(t, 5*time.Second, "the worker's stderr in the log", func() bool {
		for _, line := range strings.Split(out.String(), "\n") {
			if strings.Contains(line, "failing on purpose") && strings.Contains(line, "stream=stderr") {
				return true
			}
		}
		return false
	})
}

func TestUpdateHealthInPlace(t *testing.T) {
	spec := testSpec(t, "ok", 2)
	spec.Health = &config.Health{Type: "http", Path: "/healthz", Interval: 50 * time.Millisecond,
		Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}
	a := startApp(t, spec)
	pids := waitReady(t, a, 2)
	next := *spec
	h := *spec.Health
	h.Path = "/missing" // the helper answers 404
	next.Health = &h
	a.Update(&next)
	eventually(t, 5*time.Second, "workers unhealthy under the new check", func() bool {
		st := a.Status()
		return len(st.Workers) == 2 && st.Workers[0].State == StateUnhealthy &&
			st.Workers[1].State == StateUnhealthy && !a.Ready()
	})
	for _, w := range a.Status().Workers {
		if w.PID != pids[w.ID] {
			t.Errorf("%s restarted by a settings change", w.ID)
		}
	}
	if a.Status().Roll.State != "" {
		t.Error("a settings change started a rolling restart")
	}
}

// TestRollingRestartUnderLoad sends requests the way the proxy does (load
// the table, Acquire, forward, Release) during a roll: none may fail.
func TestRollingRestartUnderLoad(t *testing.T) {
	a := startApp(t, testSpec(t, "ok", 3))
	waitReady(t, a, 3)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for c := range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for i := 0; i < 5000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				bs := a.Table().Backends
				if len(bs) == 0 {
					failed.Add(1)
					continue
				}
				b := bs[(c+i)%len(bs)]
				if !b.Acquire() {
					continue // draining: the proxy picks again
				}
				resp, err := client.Get("http://" + b.Addr + "/env")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				b.Release()
				sent.Add(1)
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Logf("request to %s failed: %v", b.ID, err)
				}
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := a.Restart(ctx)
	close(stop)
	clients.Wait()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d requests during the roll, %d failed", sent.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during a rolling restart", failed.Load(), sent.Load())
	}
	if sent.Load() == 0 {
		t.Error("no request was sent during the roll")
	}
}

// TestStopGraceAfterDrain: a request longer than every bound still lets the
// worker have its stop signal and then the whole stop_timeout before
// SIGKILL; the drain bound is separate (issue 10, item 4).
func TestStopGraceAfterDrain(t *testing.T) {
	spec := testSpec(t, "noteterm", 1)
	termFile := filepath.Join(t.TempDir(), "term")
	spec.Env[envTermFile] = termFile
	spec.DrainTimeout = 400 * time.Millisecond
	spec.StopTimeout = 800 * time.Millisecond
	a := startApp(t, spec)
	waitReady(t, a, 1)
	b := a.Table().Backends[0]
	b.Inflight.Add(1) // a request that never ends
	start := time.Now()
	if err := a.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	raw, err := os.ReadFile(termFile)
	if err != nil {
		t.Fatalf("the worker never saw SIGTERM: %v", err)
	}
	ns, _ := strconv.ParseInt(string(raw), 10, 64)
	termAt := time.Unix(0, ns)
	t.Logf("SIGTERM %v after the stop began, SIGKILL %v after SIGTERM", termAt.Sub(start), killed.Sub(termAt))
	if d := termAt.Sub(start); d < spec.DrainTimeout-50*time.Millisecond {
		t.Errorf("SIGTERM came %v after the stop began, before the drain bound %v", d, spec.DrainTimeout)
	}
	if d := killed.Sub(termAt); d < spec.StopTimeout-50*time.Millisecond {
		t.Errorf("SIGKILL came %v after SIGTERM, want at least stop_timeout %v", d, spec.StopTimeout)
	}
}

// TestEnvPathFindsCommand: a PATH in the app's env is where its command is
// looked up (issue 10, item 9).
func TestEnvPathFindsCommand(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\nexec \"$CORRAL_TEST_BINARY\" \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "corral-test-app"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := testSpec(t, "ok", 1)
	spec.Command = []string{"corral-test-app"}
	spec.Env["PATH"] = bin + ":/usr/bin:/bin"
	spec.Env["CORRAL_TEST_BINARY"] = testBinary()
	a := startApp(t, spec)
	waitReady(t, a, 1)
}

// TestWorkerOutputSurvivesLogLevel: with corral's log at warn, a worker's
// stdout and its stderr (a crash's traceback) are still logged (issue 10,
// item 8).
func TestWorkerOutputSurvivesLogLevel(t *testing.T) {
	var out syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Warn})
	withLog := func(o *Options) { o.Logger = log }
	ok := startApp(t, testSpec(t, "ok", 1), withLog)
	waitReady(t, ok, 1)
	startApp(t, testSpec(t, "exit", 1), withLog)
	eventually(t, 5*time.Second, "both streams in a warn-level log", func() bool {
		s := out.String()
		return strings.Contains(s, "worker listening on") && strings.Contains(s, "failing on purpose")
	})
	if !strings.Contains(out.String(), "[WARN]  pool: failing on purpose") {
		t.Errorf("stderr line not written at the log's level:\n%s", out.String())
	}
}
