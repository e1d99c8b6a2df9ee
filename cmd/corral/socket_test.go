package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// socketWeb is an app of testapp workers on Unix sockets ({socket} in the
// command; testapp listens on $PORT when it is a path).
const socketWeb = `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
shutdown { timeout = "10s" }
app "web" {
  command       = ["{testapp}", "--uds={socket}"]
  env           = { SWITCH_DIR = "{dir}" }
  instances     = 2
  stop_timeout  = "5s"
  start_timeout = "20s"
  health {
    path                = "/healthz"
    interval            = "200ms"
    timeout             = "300ms"
    healthy_threshold   = 1
    unhealthy_threshold = 1
    restart_after       = "0s"
  }
}
`

// startSocketCorral starts corral with $XDG_RUNTIME_DIR at a fresh short
// directory (where it makes its socket directory) and returns both.
func startSocketCorral(t *testing.T, runtimeDir string) *corralProc {
	t.Helper()
	c := prepareCorral(t)
	c.env = append(c.env, "XDG_RUNTIME_DIR="+runtimeDir)
	c.writeConfig(socketWeb)
	c.start()
	return c
}

// shortDir is a temporary directory with a short path, removed at the end.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// sockets returns the socket of every worker /status shows, by worker id,
// failing when one shows a port.
func (c *corralProc) sockets() map[string]string {
	c.t.Helper()
	out := map[string]string{}
	for _, w := range c.app("web").Workers {
		if w.Port != 0 || w.Socket == "" {
			c.t.Fatalf("worker %s shows port %d socket %q, want a socket and no port", w.ID, w.Port, w.Socket)
		}
		out[w.ID] = w.Socket
	}
	return out
}

func TestSocketWorkersServeRollAndCleanUp(t *testing.T) {
	runtimeDir := shortDir(t)
	c := startSocketCorral(t, runtimeDir)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })

	socks := c.sockets()
	dirs, _ := filepath.Glob(filepath.Join(runtimeDir, "corral-*"))
	if len(dirs) != 1 {
		t.Fatalf("socket directories in %s: %q, want one corral-<pid>-...", runtimeDir, dirs)
	}
	dir := dirs[0]
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 || !strings.HasPrefix(filepath.Base(dir), "corral-"+strconv.Itoa(c.cmd.Process.Pid)+"-") {
		t.Fatalf("socket directory %s: %v %v, want mode 0700 named after corral's pid", dir, fi, err)
	}
	for id, s := range socks {
		if filepath.Dir(s) != dir {
			t.Errorf("%s's socket %s is not in %s", id, s, dir)
		}
		if fi, err := os.Lstat(s); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("%s's socket %s: %v %v", id, s, fi, err)
		}
	}

	// Requests reach both workers through the public port.
	seen := map[string]bool{}
	for i := 0; i < 40 && len(seen) < 2; i++ {
		r, code, err := c.get(http.DefaultClient, "/")
		if err != nil || code != 200 {
			t.Fatalf("GET /: %d %v", code, err)
		}
		seen[r.Worker] = true
	}
	if len(seen) != 2 {
		t.Fatalf("requests reached %v, want both workers", seen)
	}

	// A failing health check over the socket takes web-1 out of rotation.
	fail := filepath.Join(c.dir, "fail-web-1")
	if err := os.WriteFile(fail, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "web-1 unhealthy", func() bool {
		for _, w := range c.app("web").Workers {
			if w.ID == "web-1" {
				return w.State == "unhealthy" && strings.Contains(w.Reason, "503")
			}
		}
		return false
	})
	for i := 0; i < 20; i++ {
		if r, code, err := c.get(http.DefaultClient, "/"); err != nil || code != 200 || r.Worker != "web-2" {
			t.Fatalf("with web-1 unhealthy a request got %+v %d %v, want web-2", r, code, err)
		}
	}
	os.Remove(fail)
	waitFor(t, 10*time.Second, "web-1 back", func() bool { return len(c.readyPIDs("web")) == 2 })

	// A rolling restart under load: no request fails, every worker gets
	// a new socket, and the old sockets are gone.
	before := c.readyPIDs("web")
	stop := c.runLoad(4, 60*time.Second)
	c.signal(syscall.SIGUSR2)
	rollsTo(t, c, before, 2)
	res := stop()
	requireNoFailures(t, "SIGUSR2 over sockets", res)
	if len(res.Workers) < 4 {
		t.Errorf("the load reached %d worker processes, want the 2 old and the 2 new", len(res.Workers))
	}
	after := c.sockets()
	for id, old := range socks {
		if after[id] == old {
			t.Errorf("%s kept socket %s across the roll", id, old)
		}
	}
	waitFor(t, 10*time.Second, "only the new sockets in the directory", func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		return len(files) == 2 && (files[0] == after["web-1"] || files[0] == after["web-2"]) &&
			(files[1] == after["web-1"] || files[1] == after["web-2"])
	})

	c.signal(syscall.SIGTERM)
	if code := c.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		left, _ := filepath.Glob(filepath.Join(dir, "*"))
		t.Errorf("socket directory %s after shutdown: %v (holds %q), want it removed", dir, err, left)
	}
}

func TestSocketPathTooLongIsReported(t *testing.T) {
	runtimeDir := filepath.Join(shortDir(t), strings.Repeat("r", 90))
	if err := os.Mkdir(runtimeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	c := startSocketCorral(t, runtimeDir)
	c.waitAdmin(20 * time.Second)
	var reason string
	waitFor(t, 20*time.Second, "a worker in backoff for its socket path", func() bool {
		for _, w := range c.app("web").Workers {
			reason = w.Reason
			if w.State == "backoff" && strings.Contains(w.Reason, "unix socket path too long") {
				return true
			}
		}
		return false
	})
	if !strings.Contains(reason, "XDG_RUNTIME_DIR") || !strings.Contains(c.logText(), "unix socket path too long") {
		t.Errorf("reason %q / log do not say what to do", reason)
	}
}

func TestValidateRefusesPortAndSocketTogether(t *testing.T) {
	path := filepath.Join(t.TempDir(), "both.hcl")
	os.WriteFile(path, []byte("app \"web\" {\n  command = [\"server\",\n    \"--port={port}\", \"--uds={socket}\"]\n}\n"), 0o644)
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", "-config", path}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1 (stderr %s)", code, errOut.String())
	}
	if msg := errOut.String(); !strings.Contains(msg, "both.hcl:3:") || !strings.Contains(msg, "uses both {port} and {socket}") {
		t.Errorf("validate output lacks both.hcl:3: and the reason:\n%s", msg)
	}
}
