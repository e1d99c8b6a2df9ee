package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// securityApp is a web app (ports) and a sock app (a Unix socket, under
// /sock) whose env holds a secret.
func securityApp(secret string) string {
	return strings.Replace(webApp(2, "one", fmt.Sprintf(", DB_PASSWORD = %q, CORRAL_FLAVOUR = \"set-by-the-app\"", secret)),
		`log { level = "debug" }`, `log { level = "trace" }`, 1) + `
app "sock" {
  command     = ["{testapp}", "{socket}"]
  instances   = 1
  path_prefix = "/sock"
  strip_prefix = true
  env         = { DB_PASSWORD = "` + secret + `" }
}
`
}

// fetchWorker fetches path from worker w directly, on its port or socket.
func fetchWorker(t *testing.T, w wireWorker, path string) string {
	t.Helper()
	body, err := tryWorker(w, path)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// tryWorker fetches path from worker w directly, on its port or socket:
// the body of a 200, else an error.
func tryWorker(w wireWorker, path string) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d%s", w.Port, path)
	if w.Socket != "" {
		client.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", w.Socket)
		}}
		url = "http://worker" + path
	}
	resp, err := client.Get(url)
	if err != nil {
		return "", fmt.Errorf("GET %s of %s: %w", path, w.ID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s of %s: %d %v %s", path, w.ID, resp.StatusCode, err, body)
	}
	return string(body), nil
}

// readyWorkers waits until every app of c has n[app] ready workers and
// returns them all.
func (c *corralProc) readyWorkers(n map[string]int) []wireWorker {
	c.t.Helper()
	var out []wireWorker
	waitFor(c.t, 30*time.Second, fmt.Sprintf("ready workers %v", n), func() bool {
		out = out[:0]
		for _, a := range c.status().Apps {
			ready := 0
			for _, w := range a.Workers {
				if w.State == "ready" {
					ready++
					out = append(out, w)
				}
			}
			if ready != n[a.Name] || len(a.Workers) != n[a.Name] {
				return false
			}
		}
		return true
	})
	return out
}

// stdDescriptors is what a worker must hold when it starts: standard input
// on /dev/null, its output on corral's pipes, and nothing else.
var stdDescriptors = regexp.MustCompile(`^0 -> /dev/null\n1 -> pipe:\[\d+\]\n2 -> pipe:\[\d+\]\n$`)

// TestWorkersGetOnlyTheirStandardDescriptors lists, in every worker (port,
// socket and, as root, one run as another user; first ones and those a
// rolling restart starts while corral has other workers' pipes, client and
// admin connections and a request body's temporary file open), the
// descriptors it was started with: only 0, 1 and 2. corral itself is
// started with three descriptors its parent forgot to close (a file, a
// pipe, a listening socket); none may reach a worker.
func TestWorkersGetOnlyTheirStandardDescriptors(t *testing.T) {
	c := prepareCorral(t)
	leakFile, err := os.Create(filepath.Join(c.dir, "parent-file"))
	if err != nil {
		t.Fatal(err)
	}
	defer leakFile.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer lnFile.Close()
	c.extraFiles = []*os.File{leakFile, pw, lnFile}
	cfg := strings.Replace(securityApp("not-a-secret-here"), `log { level = "trace" }`,
		"log { level = \"trace\" }\nproxy {\n  buffering { request_memory = \"1KiB\" }\n}", 1)
	apps := map[string]int{"web": 2, "sock": 1}
	if os.Geteuid() == 0 {
		os.Chmod(filepath.Dir(testappBin), 0o755) // let "nobody" reach the test binaries
		cfg += `
app "nobody" {
  command     = ["{testapp}"]
  dir         = "/"
  user        = "nobody"
  instances   = 1
  path_prefix = "/nobody"
}
`
		apps["nobody"] = 1
	} else {
		t.Log("not root: no worker runs as another user")
	}
	c.writeConfig(cfg)
	c.start()
	c.waitReady(30 * time.Second)

	check := func(workers []wireWorker) {
		t.Helper()
		for _, w := range workers {
			if fds := fetchWorker(t, w, "/fds"); !stdDescriptors.MatchString(fds) {
				t.Errorf("worker %s (pid %d) was started with descriptors\n%swant only 0 -> /dev/null, 1 and 2 -> pipes", w.ID, w.PID, fds)
			}
		}
	}
	first := c.readyWorkers(apps)
	check(first)

	// While new workers start: a client connection that was served, an
	// admin connection, and an upload whose body corral holds in a file.
	client := &http.Client{Timeout: 10 * time.Second}
	if _, code, err := c.get(client, "/"); err != nil || code != 200 {
		t.Fatalf("GET /: %d %v", code, err)
	}
	adminConn, err := net.Dial("tcp", c.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close()
	upload, err := net.Dial("tcp", c.public)
	if err != nil {
		t.Fatal(err)
	}
	defer upload.Close()
	const bodySize = 64 << 10
	fmt.Fprintf(upload, "POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n", bodySize)
	upload.Write(make([]byte, bodySize/2))
	waitFor(t, 5*time.Second, "corral holding the upload in a file", func() bool {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.cmd.Process.Pid))
		for _, e := range ents {
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", c.cmd.Process.Pid, e.Name()))
			if strings.Contains(target, "corral-body-") {
				return true
			}
		}
		return false
	})
	for app := range apps {
		if code, body := c.adminCall("POST", "/apps/"+app+"/restart", "", ""); code != 200 {
			t.Fatalf("restart %s: %d %s", app, code, body)
		}
	}
	again := c.readyWorkers(apps)
	for _, w := range again {
		for _, old := range first {
			if w.PID == old.PID {
				t.Fatalf("worker %s kept pid %d over the restart", w.ID, w.PID)
			}
		}
	}
	check(again)
	upload.Write(make([]byte, bodySize/2))
	if got := readResponse(t, upload, bufio.NewReader(upload), 10*time.Second); got != "HTTP/1.1 200 OK" {
		t.Fatalf("the upload held while workers started: %q", got)
	}
}

// corralPrivateEnv is what corral's own environment holds for corral
// alone: its admin token and settings, systemd's notify and
// socket-activation variables.
var corralPrivateEnv = []string{
	"CORRAL_ADMIN_TOKEN=env-token-0123456789abcdef",
	"CORRAL_ADMIN=127.0.0.1:1",
	"CORRAL_CONFIG_POLL=5s",
	"NOTIFY_SOCKET=@corral-test-no-such-socket",
	"WATCHDOG_USEC=30000000",
	"WATCHDOG_PID=1",
	"LISTEN_FDS=1",
	"LISTEN_PID=1",
	"LISTEN_FDNAMES=public",
}

// TestWorkerEnvironmentIsExactlyWhatItIsMeantToGet compares every worker's
// whole environment with the rule: corral's environment without the
// variables meant for corral (CORRAL_*, and systemd's NOTIFY_SOCKET,
// WATCHDOG_USEC, WATCHDOG_PID, LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES),
// then the app's env (which may set any name, a CORRAL_ one
// too), then PORT (and CORRAL_SOCKET), CORRAL_APP and CORRAL_WORKER.
func TestWorkerEnvironmentIsExactlyWhatItIsMeantToGet(t *testing.T) {
	c := prepareCorral(t)
	// LISTEN_ADDR and WATCHDOG_TIMEOUT are no systemd names: they pass.
	c.env = append([]string{"PARENT_VAR=passed-on", "GREETING=from-corral", "DB_PASSWORD=from-corral",
		"LISTEN_ADDR=passed-on", "WATCHDOG_TIMEOUT=passed-on"}, corralPrivateEnv...)
	c.env = append(c.env, "CORRAL_CONFIG="+c.config)
	c.writeConfig(securityApp("app-secret"))
	c.start()
	c.waitReady(30 * time.Second)

	inherited := map[string]string{}
	for _, kv := range append(os.Environ(), c.env...) {
		k, v, _ := strings.Cut(kv, "=")
		inherited[k] = v
	}
	for k := range inherited {
		switch k {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES":
			delete(inherited, k)
		default:
			if strings.HasPrefix(k, "CORRAL_") {
				delete(inherited, k)
			}
		}
	}
	for _, w := range c.readyWorkers(map[string]int{"web": 2, "sock": 1}) {
		want := map[string]string{}
		for k, v := range inherited {
			want[k] = v
		}
		app, _, _ := strings.Cut(w.ID, "-")
		want["DB_PASSWORD"] = "app-secret"
		want["CORRAL_APP"], want["CORRAL_WORKER"] = app, w.ID
		if app == "web" {
			want["GREETING"], want["CORRAL_FLAVOUR"] = "one", "set-by-the-app"
			want["PORT"] = fmt.Sprint(w.Port)
		} else {
			want["PORT"], want["CORRAL_SOCKET"] = w.Socket, w.Socket
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(fetchWorker(t, w, "/environ"), "\n"), "\n") {
			k, v, _ := strings.Cut(line, "=")
			got[k] = v
		}
		if diff := envDiff(got, want); diff != "" {
			t.Errorf("worker %s's environment differs from the rule:\n%s", w.ID, diff)
		}
	}
}

// envDiff lists the names whose values differ, sorted.
func envDiff(got, want map[string]string) string {
	var lines []string
	for k, v := range got {
		if w, ok := want[k]; !ok {
			lines = append(lines, fmt.Sprintf("  %s=%s: not meant for the worker", k, v))
		} else if w != v {
			lines = append(lines, fmt.Sprintf("  %s=%s, want %q", k, v, w))
		}
	}
	for k, w := range want {
		if _, ok := got[k]; !ok {
			lines = append(lines, fmt.Sprintf("  %s missing, want %q", k, w))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestSecretsStayOutOfEverythingCorralShows puts a secret in an app's env
// and the admin token in corral's environment, changes the secret by an
// edit (a reload that rolls the app), reloads through the API with a
// file whose env does not decode, and looks for either in all corral
// shows: its log (at trace level), /status, the dashboard, /history,
// /metrics, /logs and the CLI's `corral status` (table and -json).
func TestSecretsStayOutOfEverythingCorralShows(t *testing.T) {
	const token = "admin-token-secret-0123456789"
	secrets := []string{"first-db-secret-7f3a", "second-db-secret-91c4", "broken-db-secret-55e2", token}
	c := prepareCorral(t)
	c.env = []string{"CORRAL_ADMIN_TOKEN=" + token}
	c.writeConfig(securityApp(secrets[0]))
	c.start()
	c.waitReady(30 * time.Second)
	c.readyWorkers(map[string]int{"web": 2, "sock": 1})

	// The edit rolls both apps onto the second secret.
	c.writeConfig(securityApp(secrets[1]))
	waitFor(t, 30*time.Second, "the workers on the second secret", func() bool {
		for _, a := range c.status().Apps {
			for _, w := range a.Workers {
				// A worker of the old generation may be on its way out.
				if v, err := tryWorker(w, "/env?name=DB_PASSWORD"); w.State != "ready" || err != nil || !strings.Contains(v, secrets[1]) {
					return false
				}
			}
		}
		return true
	})
	// A file whose env has a value of the wrong type: the reload is
	// refused with problems that must not quote the line.
	c.writeConfig(strings.Replace(securityApp(secrets[2]), `CORRAL_FLAVOUR = "set-by-the-app"`, `CORRAL_FLAVOUR = ["a", "b"]`, 1))
	code, body := c.adminCall("POST", "/reload", token, "")
	if code != 422 {
		t.Fatalf("POST /reload of a broken env = %d %s, want 422", code, body)
	}

	shown := map[string]string{"POST /reload": body}
	for _, path := range []string{"/status", "/", "/history", "/metrics", "/logs?lines=33000"} {
		code, body := c.adminCall("GET", path, token, "")
		if code != 200 {
			t.Fatalf("GET %s = %d %s", path, code, body)
		}
		shown["GET "+path] = body
	}
	for _, args := range [][]string{{"status", "-admin", c.admin}, {"status", "-admin", c.admin, "-json"}} {
		out, err := exec.Command(corralBin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("corral %v: %v\n%s", args, err, out)
		}
		shown[fmt.Sprint("corral ", args)] = string(out)
	}
	if !strings.Contains(shown["GET /logs?lines=33000"], "rolling restart") {
		t.Fatalf("/logs does not show the reload that rolled the apps:\n%s", shown["GET /logs?lines=33000"])
	}
	shown["corral's log"] = c.logText()
	for where, text := range shown {
		for _, s := range secrets {
			if i := strings.Index(text, s); i >= 0 {
				t.Errorf("%s shows the secret %q: ...%s...", where, s, text[max(0, i-200):min(len(text), i+len(s)+50)])
			}
		}
	}
}
