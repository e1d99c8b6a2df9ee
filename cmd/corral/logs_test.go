package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// say makes a worker of c print msg on its standard output.
func (c *corralProc) say(msg string) {
	c.t.Helper()
	resp, err := http.Get("http://" + c.public + "/say?msg=" + msg)
	if err != nil {
		c.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		c.t.Fatalf("GET /say = %d", resp.StatusCode)
	}
}

// TestLogsCommandFollowsWorkerOutput runs `corral logs web` as a user
// does: it prints the app's recent lines (the worker's output among
// them), then new output as it comes, only the app's, until Ctrl-C.
func TestLogsCommandFollowsWorkerOutput(t *testing.T) {
	c := startWeb(t, 1)
	c.say("said-before-following")

	cmd := exec.Command(corralBin, "logs", "-admin", c.admin, "-n", "1000", "web")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
	})
	lines := make(chan string, 4096)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var seen []string
	await := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("corral logs ended before %q; printed:\n%s\nstderr: %s", want, strings.Join(seen, "\n"), stderr.String())
				}
				seen = append(seen, l)
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("corral logs printed no %q within 10s; printed:\n%s", want, strings.Join(seen, "\n"))
			}
		}
	}
	await("said-before-following")
	c.say("said-while-following")
	await("said-while-following")
	for _, l := range seen {
		if !strings.Contains(l, "app=web") {
			t.Errorf("corral logs web printed a line of something else: %q", l)
		}
	}
	if l := seen[len(seen)-1]; !strings.Contains(l, "[INFO]  corral.pool: said-while-following: app=web pid=") || !strings.Contains(l, " worker=web-1") {
		t.Errorf("the worker's line reads %q", l)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("corral logs after Ctrl-C: %v (%s)", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("corral logs did not stop at Ctrl-C")
	}

	// Without -f it prints and exits; without an app, corral's own lines too.
	code, out := corralCLI(c, "logs", "-f=false", "-n", "1000")
	if code != 0 || !strings.Contains(out, "corral: corral started:") || !strings.Contains(out, "said-while-following") {
		t.Errorf("corral logs -f=false: exit %d:\n%s", code, out)
	}
	if code, out := corralCLI(c, "logs", "-f=false", "nope"); code != 1 || !strings.Contains(out, "unknown app") {
		t.Errorf("corral logs nope: exit %d: %s", code, out)
	}
}

func TestStatusJSON(t *testing.T) {
	c := startWeb(t, 2)
	code, out := corralCLI(c, "status", "--json")
	if code != 0 {
		t.Fatalf("corral status --json: exit %d: %s", code, out)
	}
	var st wireStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("corral status --json printed no JSON: %v\n%s", err, out)
	}
	if len(st.Apps) != 1 || st.Apps[0].Name != "web" || len(st.Apps[0].Workers) != 2 || st.Apps[0].Workers[0].PID <= 0 {
		t.Errorf("corral status --json = %+v, want web with 2 workers", st)
	}
	if !strings.Contains(out, "\n  \"apps\": [") {
		t.Errorf("corral status --json is not indented:\n%.300s", out)
	}
}
