package pool

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/user"
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

// socketSpec is the helper worker as an app with {socket} in its command,
// health-checked over its socket.
func socketSpec(t *testing.T, instances int) *config.App {
	spec := testSpec(t, "ok", instances)
	spec.Command = append(spec.Command, "--uds={socket}")
	spec.Health = &config.Health{Type: "http", Path: "/healthz", Interval: 50 * time.Millisecond,
		Timeout: time.Second, HealthyThreshold: 1, UnhealthyThreshold: 1}
	return spec
}

// startSocketApp starts spec with a socket directory of its own (in a
// short temporary directory) that is closed after the app has stopped.
func startSocketApp(t *testing.T, spec *config.App) (*App, *Sockets) {
	t.Helper()
	sockets := NewSockets(shortTempDir(t))
	t.Cleanup(func() {
		if err := sockets.Close(); err != nil {
			t.Error(err)
		}
	})
	return startApp(t, spec, func(o *Options) { o.Sockets = sockets }), sockets
}

// shortTempDir is a temporary directory whose path leaves room for socket
// names (t.TempDir's carries the test's name).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// unixClient sends every request to the socket at path.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// socketFiles lists the files in dir.
func socketFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, filepath.Join(dir, e.Name()))
	}
	return names
}

func TestSocketWorkers(t *testing.T) {
	a, sockets := startSocketApp(t, socketSpec(t, 2))
	waitReady(t, a, 2)
	dir := sockets.Dir()
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 || !strings.HasPrefix(filepath.Base(dir), "corral-") {
		t.Fatalf("socket directory %s: %v, %v; want a 0700 directory corral-<pid>-...", dir, fi, err)
	}
	st := a.Status()
	var paths []string
	for i, b := range a.Table().Backends {
		w := st.Workers[i]
		if b.Socket == "" || b.Addr != b.Socket || b.Port != 0 || b.Host() != "localhost" {
			t.Errorf("backend %s: addr %q socket %q port %d host %q", b.ID, b.Addr, b.Socket, b.Port, b.Host())
		}
		if w.ID != b.ID || w.Socket != b.Socket || w.Port != 0 {
			t.Errorf("status of %s: socket %q port %d, want socket %q port 0", w.ID, w.Socket, w.Port, b.Socket)
		}
		if filepath.Dir(b.Socket) != dir {
			t.Errorf("socket %s is not in %s", b.Socket, dir)
		}
		var got struct {
			PORT, CORRAL_SOCKET, CORRAL_WORKER string
			Args                               []string
		}
		resp, err := unixClient(b.Socket).Get("http://localhost/env")
		if err != nil {
			t.Fatal(err)
		}
		err = decodeJSON(resp, &got)
		if err != nil {
			t.Fatal(err)
		}
		if got.PORT != b.Socket || got.CORRAL_SOCKET != b.Socket || got.CORRAL_WORKER != b.ID ||
			!slices.Equal(got.Args, []string{"--uds=" + b.Socket}) {
			t.Errorf("worker %s got %+v, want PORT, CORRAL_SOCKET and --uds= set to %s", b.ID, got, b.Socket)
		}
		paths = append(paths, b.Socket)
	}
	if len(paths) != 2 || paths[0] == paths[1] {
		t.Fatalf("socket paths %q, want two distinct", paths)
	}

	// A rolling restart gives every worker a new socket; the old ones'
	// files are gone once they have stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a, 2)
	var now []string
	for _, b := range a.Table().Backends {
		now = append(now, b.Socket)
		if slices.Contains(paths, b.Socket) {
			t.Errorf("%s kept socket %s across the roll", b.ID, b.Socket)
		}
	}
	eventually(t, 5*time.Second, "only the new workers' sockets in the directory", func() bool {
		files := socketFiles(t, dir)
		slices.Sort(files)
		slices.Sort(now)
		return slices.Equal(files, now)
	})
}

func TestSocketHealthFailureLeavesRotation(t *testing.T) {
	spec := socketSpec(t, 2)
	sick := filepath.Join(t.TempDir(), "sick")
	spec.Env[envSickFile] = sick
	a, _ := startSocketApp(t, spec)
	pids := waitReady(t, a, 2)
	if err := os.WriteFile(sick+".web-2", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "web-2 unhealthy and out of rotation", func() bool {
		st := a.Status()
		tab := a.Table()
		return len(tab.Backends) == 1 && tab.Backends[0].ID == "web-1" &&
			st.Workers[1].State == StateUnhealthy && st.Workers[1].Reason == "status 500"
	})
	if err := os.Remove(sick + ".web-2"); err != nil {
		t.Fatal(err)
	}
	if back := waitReady(t, a, 2); back["web-2"] != pids["web-2"] {
		t.Errorf("web-2 was restarted (%d -> %d), want it back in rotation", pids["web-2"], back["web-2"])
	}
}

// TestSocketRemovedAfterKill9 checks that the socket file of a worker that
// could not clean up (SIGKILL: Go's listener unlinks its file only on
// Close) is removed once the worker is gone, and the directory at Close.
func TestSocketRemovedAfterKill9(t *testing.T) {
	a, sockets := startSocketApp(t, socketSpec(t, 1))
	pids := waitReady(t, a, 1)
	old := a.Table().Backends[0].Socket
	if err := unix.Kill(pids["web-1"], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "web-1 back with a new pid", func() bool {
		now, ok := readyPIDs(a, 1)
		return ok && now["web-1"] != pids["web-1"]
	})
	// Removed once the killed worker's process group is gone, which may
	// come after its replacement is ready.
	eventually(t, 5*time.Second, "the killed worker's socket removed", func() bool {
		_, err := os.Lstat(old)
		return errors.Is(err, os.ErrNotExist)
	})
	dir := sockets.Dir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if files := socketFiles(t, dir); len(files) != 0 {
		t.Errorf("socket files left after Stop: %q", files)
	}
	if err := sockets.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket directory %s after Close: %v, want it removed", dir, err)
	}
	if _, err := sockets.Take("web-1", nil); err == nil {
		t.Error("Take after Close succeeded")
	}
}

func TestSocketPathTooLong(t *testing.T) {
	parent := filepath.Join(shortTempDir(t), strings.Repeat("d", 80))
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	sockets := NewSockets(parent)
	defer sockets.Close()
	_, err := sockets.Take("web-1", nil)
	if !errors.Is(err, ErrSocketPathTooLong) || !strings.Contains(err.Error(), "XDG_RUNTIME_DIR") {
		t.Fatalf("Take: %v, want ErrSocketPathTooLong naming XDG_RUNTIME_DIR", err)
	}

	// An app whose socket cannot be made backs off and says why.
	a := startApp(t, socketSpec(t, 1), func(o *Options) { o.Sockets = sockets })
	eventually(t, 5*time.Second, "web-1 in backoff for its socket path", func() bool {
		st := a.Status()
		return len(st.Workers) == 1 && st.Workers[0].State == StateBackoff &&
			strings.Contains(st.Workers[0].Reason, "unix socket path too long")
	})
}

func TestSocketTakeRemovesStaleFile(t *testing.T) {
	sockets := NewSockets(shortTempDir(t))
	defer sockets.Close()
	first, err := sockets.Take("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A file at the next path (left by anything) must not stop a worker
	// binding it.
	next := strings.TrimSuffix(first, ".1.sock") + ".2.sock"
	if err := os.WriteFile(next, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := sockets.Take("web-1", nil)
	if err != nil || got != next {
		t.Fatalf("Take = %q, %v; want %q", got, err, next)
	}
	if _, err := os.Lstat(next); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale file at %s: %v, want it removed", next, err)
	}
	ln, err := net.Listen("unix", got)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// decodeJSON reads resp's body into v and closes it.
func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestSocketWorkerAsAnotherUser: a worker that runs as another user (here
// nobody) gets its socket in a 0700 directory of its own that user owns
// (beside corral's, in a parent every user can traverse, as /tmp), binds
// it, and is served; Close removes that directory too. Only root can run
// workers as another user.
func TestSocketWorkerAsAnotherUser(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("looking up nobody: %v", err)
	}
	parent := shortTempDir(t)
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	sockets := NewSockets(parent)
	defer sockets.Close()
	cred, err := credential("nobody", "")
	if err != nil {
		t.Fatal(err)
	}
	path, err := sockets.Take("web-1", cred)
	if os.Getuid() != 0 {
		if err == nil {
			t.Fatal("Take for another user succeeded without root")
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o700 || strconv.Itoa(int(st.Uid)) != nobody.Uid || filepath.Dir(filepath.Dir(path)) != parent {
		t.Fatalf("%s: mode %v uid %d, want 0700 owned by nobody (%s) in %s", filepath.Dir(path), fi.Mode().Perm(), st.Uid, nobody.Uid, parent)
	}

	// The worker itself: a copy of the test binary nobody may run.
	binDir := shortTempDir(t)
	if err := os.Chmod(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(binDir, "worker")
	data, err := os.ReadFile(testBinary())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := socketSpec(t, 1)
	spec.Command = []string{bin, "--uds={socket}"}
	spec.User = "nobody"
	spec.Dir = binDir
	a := startApp(t, spec, func(o *Options) { o.Sockets = sockets })
	waitReady(t, a, 1)
	b := a.Table().Backends[0]
	if filepath.Dir(b.Socket) != filepath.Dir(path) {
		t.Errorf("socket %s, want it in %s", b.Socket, filepath.Dir(path))
	}
	resp, err := unixClient(b.Socket).Get("http://localhost/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sockets.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("nobody's socket directory after Close: %v, want it removed", err)
	}
}

// TestSocketScale: runtime scaling over sockets gives each new worker its
// own socket and removes the sockets of the workers scaled away.
func TestSocketScale(t *testing.T) {
	a, sockets := startSocketApp(t, socketSpec(t, 1))
	waitReady(t, a, 1)
	if _, err := a.Scale(3); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a, 3)
	seen := map[string]bool{}
	for _, b := range a.Table().Backends {
		resp, err := unixClient(b.Socket).Get("http://localhost/healthz")
		if err != nil {
			t.Fatalf("%s over %s: %v", b.ID, b.Socket, err)
		}
		resp.Body.Close()
		seen[b.Socket] = true
	}
	if len(seen) != 3 || len(socketFiles(t, sockets.Dir())) != 3 {
		t.Fatalf("3 workers on %d sockets, %d files", len(seen), len(socketFiles(t, sockets.Dir())))
	}
	if _, err := a.Scale(1); err != nil {
		t.Fatal(err)
	}
	waitReady(t, a, 1)
	keep := a.Table().Backends[0].Socket
	eventually(t, 10*time.Second, "only web-1's socket left", func() bool {
		files := socketFiles(t, sockets.Dir())
		return len(files) == 1 && files[0] == keep
	})
}
