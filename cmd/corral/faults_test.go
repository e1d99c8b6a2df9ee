package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fdLimit is the descriptor limit TestOutOfDescriptors runs corral with.
const fdLimit = 128

// openFDs counts the open descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// rawGet sends a GET for path on c and reads the status line, waiting at
// most wait; "" when nothing came.
func rawGet(t *testing.T, c net.Conn, r *bufio.Reader, path string, wait time.Duration) string {
	t.Helper()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path); err != nil {
		t.Fatalf("sending GET %s: %v", path, err)
	}
	return readResponse(t, c, r, wait)
}

// readResponse reads one response's status line and skips its head and
// body (Content-Length only); "" when nothing came within wait.
func readResponse(t *testing.T, c net.Conn, r *bufio.Reader, wait time.Duration) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	status, err := r.ReadString('\n')
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() && status == "" {
			return ""
		}
		t.Fatalf("reading a response: %v (got %q)", err, status)
	}
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a response head: %v", err)
		}
		if line == "\r\n" {
			break
		}
		if v, ok := strings.CutPrefix(strings.ToLower(line), "content-length:"); ok {
			fmt.Sscan(strings.TrimSpace(v), &length)
		}
	}
	if _, err := r.Discard(length); err != nil {
		t.Fatalf("reading a response body: %v", err)
	}
	return strings.TrimSpace(status)
}

// TestOutOfDescriptors runs corral with `ulimit -n 128` and a
// max_connections above it, and opens client connections until accept
// fails with EMFILE: a connection already open is still served (on a
// pooled worker connection; a request that needs a new one gets 503, the
// worker not blamed), a new one waits in the listen backlog (neither
// refused nor reset), on the public port and the admin API alike, one log
// line each says why, and once connections close the waiting ones are
// accepted and answered.
func TestOutOfDescriptors(t *testing.T) {
	c := prepareCorral(t)
	c.writeConfig(strings.Replace(webApp(1, "one", ""), `log { level = "debug" }`,
		"log { level = \"info\" }\nproxy { max_connections = 100000 }", 1))
	c.start("sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$@"`, fdLimit), "sh")
	c.waitReady(30 * time.Second)
	pid := c.cmd.Process.Pid
	baseline := openFDs(t, pid)
	worker := c.app("web").Workers[0] // asked directly while corral has no descriptor to spare

	first, err := net.Dial("tcp", c.public)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	firstR := bufio.NewReader(first)
	if got := rawGet(t, first, firstR, "/", 5*time.Second); got != "HTTP/1.1 200 OK" {
		t.Fatalf("first request: %q", got)
	}

	// Fill corral's descriptor table with idle connections.
	var idle []net.Conn
	defer func() {
		for _, ic := range idle {
			ic.Close()
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		ic, err := net.Dial("tcp", c.public)
		if err != nil {
			t.Fatalf("connection %d: %v", len(idle), err)
		}
		idle = append(idle, ic)
		return ic
	}
	for openFDs(t, pid) < fdLimit {
		if len(idle) > 2*fdLimit {
			t.Fatalf("%d connections open and corral has only %d descriptors", len(idle), openFDs(t, pid))
		}
		before := openFDs(t, pid)
		dial()
		waitFor(t, 2*time.Second, "corral to take the connection or run out", func() bool {
			n := openFDs(t, pid)
			return n > before || n >= fdLimit
		})
	}
	t.Logf("corral held %d descriptors with one worker; the limit of %d came at %d client connections", baseline, fdLimit, len(idle)+1)
	// A few more wait in the backlog, so that any descriptor corral frees
	// (a health check's, say) goes to one of them at once.
	for range 4 {
		dial()
	}
	waitFor(t, 5*time.Second, "the log line about descriptors", func() bool {
		return strings.Contains(c.logText(), "out of file descriptors")
	})

	// A connection opened now waits: no answer, no reset.
	late, err := net.Dial("tcp", c.public)
	if err != nil {
		t.Fatalf("a connection past the limit was refused: %v", err)
	}
	defer late.Close()
	lateR := bufio.NewReader(late)
	if got := rawGet(t, late, lateR, "/", time.Second); got != "" {
		t.Fatalf("a connection past the descriptor limit was answered %q while corral had none to spare", got)
	}
	// The admin API waits the same way.
	adminLate, err := net.Dial("tcp", c.admin)
	if err != nil {
		t.Fatalf("an admin connection past the limit was refused: %v", err)
	}
	defer adminLate.Close()
	adminR := bufio.NewReader(adminLate)
	if got := rawGet(t, adminLate, adminR, "/healthz", 500*time.Millisecond); got != "" {
		t.Fatalf("an admin connection past the descriptor limit was answered %q while corral had none to spare", got)
	}
	// The connection served before still is.
	for i := range 3 {
		if got := rawGet(t, first, firstR, "/", 5*time.Second); got != "HTTP/1.1 200 OK" {
			t.Fatalf("request %d on an open connection while out of descriptors: %q", i, got)
		}
	}

	// A connection accepted before the limit is served on the pooled
	// worker connection; while another request holds that one, a request
	// that needs a new worker connection is corral's shortage, not the
	// worker's: 503 with Retry-After, and the worker stays in rotation.
	pooled := idle[0]
	pooledR := bufio.NewReader(pooled)
	if got := rawGet(t, pooled, pooledR, "/", 5*time.Second); got != "HTTP/1.1 200 OK" {
		t.Fatalf("a request on a connection accepted before the limit: %q", got)
	}
	if _, err := fmt.Fprint(first, "GET /slow?ms=500 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the slow request at the worker, on the pooled connection", func() bool {
		n, err := tryWorker(worker, "/inflight")
		return err == nil && strings.TrimSpace(n) == "1"
	})
	if got := rawGet(t, pooled, pooledR, "/", 5*time.Second); got != "HTTP/1.1 503 Service Unavailable" {
		t.Fatalf("a request needing a new worker connection while out of descriptors: %q, want 503", got)
	}
	if got := readResponse(t, first, firstR, 5*time.Second); got != "HTTP/1.1 200 OK" {
		t.Fatalf("the slow request: %q", got)
	}

	// Free descriptors: the waiting connection is accepted and answered.
	for _, ic := range idle[:len(idle)/2] {
		ic.Close()
	}
	idle = idle[len(idle)/2:]
	if got := readResponse(t, late, lateR, 10*time.Second); got != "HTTP/1.1 200 OK" {
		t.Fatalf("the waiting connection, once descriptors were free: %q", got)
	}
	if got := readResponse(t, adminLate, adminR, 10*time.Second); got != "HTTP/1.1 200 OK" {
		t.Fatalf("the waiting admin connection, once descriptors were free: %q", got)
	}
	if w := c.app("web").Workers[0]; w.State != "ready" {
		t.Fatalf("worker %s is %s after corral's own shortage, want ready", w.ID, w.State)
	}
	waitFor(t, 5*time.Second, "the log line that accepting resumed", func() bool {
		return strings.Contains(c.logText(), "accepting connections again")
	})
	for _, ic := range idle {
		ic.Close()
	}
	idle = nil
	client := &http.Client{Timeout: 5 * time.Second}
	if _, code, err := c.get(client, "/"); err != nil || code != 200 {
		t.Fatalf("a new connection after recovery: %d %v", code, err)
	}
	if code, _ := c.adminCall("GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("/healthz after recovery: %d", code)
	}
	code, metrics := c.adminCall("GET", "/metrics", "", "")
	var waits int
	for _, line := range strings.Split(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, "corral_client_accept_descriptor_waits_total "); ok {
			fmt.Sscan(v, &waits)
		}
	}
	if code != 200 || waits < 1 {
		t.Fatalf("/metrics (%d) counts %d accepts that waited for a descriptor, want at least 1", code, waits)
	}
	log := c.logText()
	accepts, dials := strings.Count(log, "new connections wait in the listen backlog"), strings.Count(log, "need a new worker connection get 503")
	if accepts != 2 || dials != 1 || strings.Contains(log, "Accept error") {
		t.Fatalf("%d log lines about accepts waiting (want one of the proxy's and one of the admin API's) and %d about worker connections (want 1), or a line a retry:\n%s",
			accepts, dials, log)
	}
}

// TestConfigGoneWhileRunning deletes the config file of a running corral,
// then puts a directory and then a dangling symlink in its place (the
// tests run as root, where a file of mode 000 is still readable, so
// those stand for an unreadable file): each time the running config keeps
// serving, the watcher's check logs why once, and a reload (SIGHUP,
// POST /reload, `corral reload`) is refused saying why. When the file
// comes back it is applied.
func TestConfigGoneWhileRunning(t *testing.T) {
	c := startWeb(t, 1)
	client := &http.Client{Timeout: 5 * time.Second}
	serving := func(greeting string) {
		t.Helper()
		r, code, err := c.get(client, "/")
		if err != nil || code != 200 || r.Greeting != greeting {
			t.Fatalf("GET / = %d %+v %v, want 200 from the config with greeting %q", code, r, err, greeting)
		}
	}
	for _, tc := range []struct {
		name, why string
		replace   func()
	}{
		{"deleted", "no such file or directory", func() {}},
		{"a directory", "is a directory", func() {
			if err := os.Mkdir(c.config, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"a dangling symlink", "no such file or directory", func() {
			if err := os.Symlink(c.config+".gone", c.config); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		before := strings.Count(c.logText(), "cannot read config file")
		if err := os.RemoveAll(c.config); err != nil {
			t.Fatal(err)
		}
		tc.replace()
		waitFor(t, 10*time.Second, tc.name+": the watcher's line", func() bool {
			return strings.Count(c.logText(), "cannot read config file") > before
		})
		serving("one")

		code, body := c.adminCall("POST", "/reload", "", "")
		if code != 422 || !strings.Contains(body, tc.why) || !strings.Contains(body, c.config) {
			t.Fatalf("%s: POST /reload = %d %s, want 422 naming the file and %q", tc.name, code, body, tc.why)
		}
		out, err := exec.Command(corralBin, "reload", "-admin", c.admin).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "the running config is unchanged") || !strings.Contains(string(out), tc.why) {
			t.Fatalf("%s: corral reload: %v\n%s", tc.name, err, out)
		}
		c.signal(syscall.SIGHUP)
		waitFor(t, 10*time.Second, tc.name+": the SIGHUP reload refused", func() bool {
			s := c.status()
			return s.LastReload != nil && s.LastReload.Trigger == "signal" && !s.LastReload.Applied &&
				strings.Contains(strings.Join(s.LastReload.Problems, " ")+s.LastReload.Error, tc.why)
		})
		serving("one")
		if a := c.app("web"); a.Ready != 1 {
			t.Fatalf("%s: %d ready workers, want 1", tc.name, a.Ready)
		}
	}
	if n := strings.Count(c.logText(), "cannot read config file"); n != 3 {
		t.Fatalf("%d lines about the unreadable file for 3 replacements, want 3:\n%s", n, c.logText())
	}

	// Back: the watcher applies it.
	if err := os.Remove(c.config); err != nil {
		t.Fatal(err)
	}
	c.writeConfig(webApp(1, "two", ""))
	waitFor(t, 20*time.Second, "the config that came back", func() bool {
		r, code, err := c.get(client, "/")
		return err == nil && code == 200 && r.Greeting == "two"
	})
}

// TestWorkerPortRangeExhausted runs two workers on a worker_ports range
// of six ports (validation wants twice instances plus surge), five of them
// held by another program: one worker starts and serves, the other waits
// in backoff with a reason naming the range and what holds it, and once a
// port is free it starts on it.
func TestWorkerPortRangeExhausted(t *testing.T) {
	c := prepareCorral(t)
	var first int
	fmt.Sscanf(c.ports, "%d-", &first)
	c.ports = fmt.Sprintf("%d-%d", first, first+5)
	held := map[int]net.Listener{}
	for port := first + 1; port <= first+5; port++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		held[port] = ln
	}
	c.writeConfig(webApp(2, "one", ""))
	c.start()
	c.waitReady(30 * time.Second)

	var waiting wireWorker
	waitFor(t, 20*time.Second, "one ready worker and one waiting for a port", func() bool {
		ready := 0
		for _, w := range c.app("web").Workers {
			switch w.State {
			case "ready":
				ready++
			case "backoff":
				waiting = w
			}
		}
		return ready == 1 && waiting.ID != ""
	})
	if !strings.Contains(waiting.Reason, "worker_ports "+c.ports) || !strings.Contains(waiting.Reason, "no free worker port") ||
		!strings.Contains(waiting.Reason, "5 bound by other programs") {
		t.Fatalf("worker %s waits with reason %q, want one naming worker_ports %s, no free port and the 5 ports held elsewhere", waiting.ID, waiting.Reason, c.ports)
	}
	if !strings.Contains(c.logText(), "no free worker port") {
		t.Fatalf("the log does not say that no port was free:\n%s", c.logText())
	}
	client := &http.Client{Timeout: 5 * time.Second}
	for range 4 {
		if _, code, err := c.get(client, "/"); err != nil || code != 200 {
			t.Fatalf("GET / with one of two workers: %d %v", code, err)
		}
	}

	held[first+3].Close()
	waitFor(t, 20*time.Second, "the second worker on the freed port", func() bool {
		a := c.app("web")
		for _, w := range a.Workers {
			if w.ID == waiting.ID {
				return w.State == "ready" && w.Port == first+3 && a.Ready == 2
			}
		}
		return false
	})

	// A runtime scale past what the range has free: the new slot waits
	// the same way, the others serve on.
	resp, err := http.Post("http://"+c.admin+"/apps/web/scale", "application/json", strings.NewReader(`{"instances": 3}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scale to 3: %d", resp.StatusCode)
	}
	waitFor(t, 20*time.Second, "the third worker waiting for a port", func() bool {
		a := c.app("web")
		for _, w := range a.Workers {
			if w.ID == "web-3" {
				return w.State == "backoff" && a.Ready == 2 &&
					strings.Contains(w.Reason, "(2 held by workers, 4 bound by other programs): no free worker port")
			}
		}
		return false
	})
}

// fullSpoolDir returns the wrapper that starts corral in a mount namespace
// of its own with a 64 KiB tmpfs on dir: a real filesystem that fills up
// (ENOSPC), gone with corral. It skips where namespaces or mounts are not
// allowed.
func fullSpoolDir(t *testing.T, dir string) []string {
	t.Helper()
	path := rootUnshare(t, "to mount a small tmpfs (unshare --mount)")
	const script = `mount -t tmpfs -o size=64k corral-test "$0" && exec "$@"`
	if out, err := exec.Command(path, "--mount", "sh", "-c", script, dir, "true").CombinedOutput(); err != nil {
		t.Skipf("this sandbox cannot mount a tmpfs in a mount namespace: %v %s", err, out)
	}
	return []string{path, "--mount", "sh", "-c", script, dir}
}

// TestBufferDiskFullFallsBackToStreaming gives the buffering a directory
// on a 64 KiB filesystem: a 1 MiB upload that would be held in a file and
// a 4 MiB response to a slow client that would spill to one both fill it
// up, and both go on streaming: the worker gets the whole body (its hash
// checked there), the client the whole response (hash checked), and the
// log says why once for each.
func TestBufferDiskFullFallsBackToStreaming(t *testing.T) {
	c := prepareCorral(t)
	spool := filepath.Join(c.dir, "spool")
	if err := os.Mkdir(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	wrap := fullSpoolDir(t, spool)
	c.writeConfig(strings.Replace(webApp(1, "one", ""), `log { level = "debug" }`, `log { level = "info" }
proxy {
  buffering {
    request_memory  = "16KiB"
    request_disk    = "16MiB"
    response_memory = "64KiB"
    response_disk   = "16MiB"
    dir             = "{dir}/spool"
  }
}`, 1))
	c.start(wrap...)
	c.waitReady(30 * time.Second)

	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i * 13)
	}
	resp, err := http.Post("http://"+c.public+"/upload", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %x\n", len(body), sha256.Sum256(body)); resp.StatusCode != 200 || string(got) != want {
		t.Fatalf("upload with the buffer disk full: %d %q, want 200 %q", resp.StatusCode, got, want)
	}

	const size = 4 << 20
	resp, err = http.Get(fmt.Sprintf("http://%s/bytes?n=%d", c.public, size))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a slow client: the response spills past memory
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || fmt.Sprintf("%x", h.Sum(nil)) != resp.Header.Get("X-Body-Sha256") {
		t.Fatalf("response with the buffer disk full: %d of %d bytes (%v), hash %x, want %s", n, size, err, h.Sum(nil), resp.Header.Get("X-Body-Sha256"))
	}
	log := c.logText()
	for _, what := range []string{"request body", "response"} {
		line := "cannot write a buffer file; streaming the " + what + " instead"
		if n := strings.Count(log, line); n != 1 || !strings.Contains(log, "no space left on device") {
			t.Fatalf("%d lines %q naming the full disk, want 1:\n%s", n, line, log)
		}
	}
	if w := c.app("web").Workers[0]; w.State != "ready" || w.Restarts != 0 {
		t.Fatalf("worker %s after the full disk: %s, %d restarts", w.ID, w.State, w.Restarts)
	}
}
