package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/config"
)

// Environment of the helper worker: the test binary re-executed.
const (
	envMode      = "CORRAL_TEST_WORKER" // ok, exit, never, ignoreterm, noteterm
	envSpawnLog  = "CORRAL_TEST_SPAWNLOG"
	envSickFile  = "CORRAL_TEST_SICKFILE"  // /healthz answers 500 while it (or FILE.<worker id>) exists
	envTermFile  = "CORRAL_TEST_TERMFILE"  // mode noteterm: SIGTERM's arrival is written here
	envSlowStart = "CORRAL_TEST_SLOWSTART" // a duration to wait before listening
)

// testReaper is the one reaper of the test process.
var testReaper *Reaper

// testPorts is shared by every test so concurrent apps never collide.
var testPorts = NewPorts(config.PortRange{First: 31100, Last: 31899})

func TestMain(m *testing.M) {
	RunShim()
	if f := os.Getenv(envPoolHost); f != "" {
		runPoolHost(f)
	}
	if mode := os.Getenv(envMode); mode != "" {
		runWorker(mode)
		os.Exit(0)
	}
	testReaper = NewReaper(testLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		testReaper.Run(ctx)
		close(done)
	}()
	code := m.Run()
	cancel()
	<-done
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runWorker is the fake app: an HTTP server on 127.0.0.1:$PORT, or on the
// Unix socket $PORT when it is a path.
func runWorker(mode string) {
	if f := os.Getenv(envSpawnLog); f != "" {
		if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(fh, "%d\n", time.Now().UnixNano())
			fh.Close()
		}
	}
	switch mode {
	case "exit":
		fmt.Fprintln(os.Stderr, "failing on purpose")
		os.Exit(1)
	case "never":
		select {}
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
	case "noteterm":
		// Writes the time of each SIGTERM and keeps running.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		go func() {
			for range sig {
				os.WriteFile(os.Getenv(envTermFile), []byte(strconv.FormatInt(time.Now().UnixNano(), 10)), 0o644)
			}
		}()
	}
	if d, err := time.ParseDuration(os.Getenv(envSlowStart)); err == nil {
		time.Sleep(d) // a slow app, not a wait for a condition
	}
	network, addr := "tcp", "127.0.0.1:"+os.Getenv("PORT")
	if strings.HasPrefix(os.Getenv("PORT"), "/") {
		network, addr = "unix", os.Getenv("PORT") // a {socket} app
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"PORT": os.Getenv("PORT"), "CORRAL_SOCKET": os.Getenv("CORRAL_SOCKET"), "CORRAL_APP": os.Getenv("CORRAL_APP"),
			"CORRAL_WORKER": os.Getenv("CORRAL_WORKER"), "args": os.Args[1:], "pid": os.Getpid(),
		})
	})
	mux.HandleFunc("/grow", func(w http.ResponseWriter, r *http.Request) {
		// 64 MiB, every page touched so it is resident: a leak.
		b := make([]byte, 64<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		grown = append(grown, b)
	})
	mux.HandleFunc("/say", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := range n {
			fmt.Println(r.URL.Query().Get("msg"), i)
		}
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		// The app's sick file, or the one of this worker alone (FILE.web-2).
		sick := os.Getenv(envSickFile)
		for _, f := range []string{sick, sick + "." + os.Getenv("CORRAL_WORKER")} {
			if _, err := os.Stat(f); err == nil && sick != "" {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
		}
	})
	fmt.Println("worker listening on", l.Addr())
	if mode != "ignoreterm" && mode != "noteterm" {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		go func() { <-sig; os.Exit(0) }()
	}
	http.Serve(l, mux)
}

// grown holds what /grow allocated, so it stays resident.
var grown [][]byte

// testBinary is the path of the test binary, re-executed as the worker.
func testBinary() string { return os.Args[0] }

func testLogger() hclog.Logger {
	level := os.Getenv("CORRAL_TEST_LOG")
	if level == "" {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Level: hclog.LevelFromString(level), Output: os.Stderr})
}

// testSpec is a small app of the helper worker in mode.
func testSpec(t *testing.T, mode string, instances int) *config.App {
	t.Helper()
	return &config.App{
		Name:         "web",
		Command:      []string{testBinary()},
		Dir:          t.TempDir(),
		Env:          map[string]string{envMode: mode},
		Instances:    instances,
		StopSignal:   syscall.SIGTERM,
		StopTimeout:  3 * time.Second,
		StartTimeout: 10 * time.Second,
		Backoff:      config.Backoff{Min: 50 * time.Millisecond, Max: 400 * time.Millisecond, ResetAfter: 10 * time.Second},
		Surge:        1,
	}
}

// startApp starts spec's app and stops it at the end of the test, checking
// that every process it ever showed is gone.
func startApp(t *testing.T, spec *config.App, mod ...func(*Options)) *App {
	t.Helper()
	opts := Options{Logger: testLogger(), Ports: testPorts, Reaper: testReaper}
	for _, m := range mod {
		m(&opts)
	}
	a := New(spec, opts)
	seen := map[int]bool{}
	stopSeen := make(chan struct{})
	seenDone := make(chan struct{})
	// Record every pid the app shows, to check they are all gone after Stop.
	go func() {
		defer close(seenDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, w := range a.Status().Workers {
				if w.PID > 0 {
					seen[w.PID] = true
				}
			}
			select {
			case <-stopSeen:
				return
			case <-tick.C:
			}
		}
	}()
	a.Start()
	t.Cleanup(func() {
		close(stopSeen)
		<-seenDone
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := a.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		for pid := range seen {
			if !processGone(pid) {
				t.Errorf("pid %d still exists after Stop", pid)
			}
		}
		if n := len(a.Table().Backends); n != 0 {
			t.Errorf("table has %d backends after Stop", n)
		}
	})
	return a
}

// processGone reports whether pid neither runs nor lingers as a zombie.
func processGone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return errors.Is(unix.Kill(pid, 0), unix.ESRCH) && errors.Is(err, os.ErrNotExist)
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(time.Now().Add(timeout), nil, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// readyPIDs returns slot id -> pid of the workers in state ready, when
// exactly n are ready and no other worker is present.
func readyPIDs(a *App, n int) (map[string]int, bool) {
	st := a.Status()
	pids := map[string]int{}
	for _, w := range st.Workers {
		if w.State != StateReady {
			return nil, false
		}
		pids[w.ID] = w.PID
	}
	return pids, len(pids) == n && len(st.Workers) == n && len(a.Table().Backends) == n
}

// waitReady waits until exactly n workers are ready and returns their pids.
func waitReady(t *testing.T, a *App, n int) map[string]int {
	t.Helper()
	var pids map[string]int
	eventually(t, 15*time.Second, fmt.Sprintf("%d ready workers", n), func() bool {
		var ok bool
		pids, ok = readyPIDs(a, n)
		return ok
	})
	return pids
}

// childrenOf returns the pids whose parent is pid.
func childrenOf(pid int) []int {
	var kids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The comm field may hold spaces; fields after the last ')' are fixed.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, n)
		}
	}
	return kids
}

// getJSON fetches url into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("get %s: %v", url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decoding %s: %v", url, err)
	}
}
