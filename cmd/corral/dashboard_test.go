package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chromiumBinary returns the headless browser to use, "" when there is none.
func chromiumBinary() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// runChromium runs the browser headless on url with args and returns its
// standard output. Its whole process group is killed at the end: the
// browser starts helpers of its own.
func runChromium(t *testing.T, bin, profile, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	argv := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--user-data-dir=" + profile, "--window-size=1280,900",
		// Virtual time runs the page's timers (the 2 s refresh) without
		// waiting for them; fetches still take real time.
		"--virtual-time-budget=6000",
	}, args...)
	cmd := exec.CommandContext(ctx, bin, append(argv, url)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // helpers left behind
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, stderr.String())
	}
	return string(out)
}

// TestDashboardInChromium loads the dashboard of a running corral under
// load in headless Chromium and checks what the page's script drew: every
// worker with its state, a non-zero request rate, the chart. It saves a
// screenshot in the test's temp dir. Without a chromium binary it skips,
// unless CORRAL_REQUIRE_CHROMIUM is set (CI), where it fails.
func TestDashboardInChromium(t *testing.T) {
	bin := chromiumBinary()
	if bin == "" {
		if os.Getenv("CORRAL_REQUIRE_CHROMIUM") != "" {
			t.Fatal("CORRAL_REQUIRE_CHROMIUM is set and no chromium binary is on PATH")
		}
		t.Skip("no chromium binary on PATH (CORRAL_REQUIRE_CHROMIUM=1 makes this a failure)")
	}
	c := newCorral(t, webApp(3, "one", ""))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "3 ready workers", func() bool { return len(c.readyPIDs("web")) == 3 })
	stop := c.runLoad(2, 90*time.Second)
	defer stop()
	// The page shows what /history has: wait for a rate there first.
	waitFor(t, 20*time.Second, "a request rate in /history", func() bool {
		var h struct {
			Apps []struct {
				Points []struct {
					RPS float64 `json:"rps"`
				} `json:"points"`
			} `json:"apps"`
		}
		resp, err := http.Get("http://" + c.admin + "/history")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		if json.NewDecoder(resp.Body).Decode(&h) != nil || len(h.Apps) == 0 {
			return false
		}
		pts := h.Apps[0].Points
		return len(pts) >= 2 && pts[len(pts)-1].RPS > 0
	})

	dir := t.TempDir()
	url := "http://" + c.admin + "/"
	dom := runChromium(t, bin, filepath.Join(dir, "profile"), url, "--dump-dom")
	for i := 1; i <= 3; i++ {
		// data-state is set by the script's render only, not the first paint.
		row := regexp.MustCompile(`<tr data-worker="web-` + strconv.Itoa(i) + `" data-state="(\w+)">`).FindStringSubmatch(dom)
		if row == nil {
			t.Errorf("web-%d has no row drawn by the page's script", i)
			continue
		}
		if row[1] != "ready" {
			t.Errorf("web-%d shows state %q, want ready", i, row[1])
		}
	}
	if !strings.Contains(dom, `class="state state-ready">ready</span>`) {
		t.Error("no ready state badge in the page")
	}
	m := regexp.MustCompile(`data-stat="rps">([0-9.]+)<`).FindStringSubmatch(dom)
	if m == nil {
		t.Error("no requests/s figure in the page")
	} else if v, _ := strconv.ParseFloat(m[1], 64); v <= 0 {
		t.Errorf("requests/s shown as %s under load", m[1])
	}
	if !regexp.MustCompile(`<td class="num" data-col="rps">[0-9.]*[1-9][0-9.]*</td>`).MatchString(dom) {
		t.Error("no worker with a non-zero requests/s")
	}
	if !regexp.MustCompile(`<path d="M[0-9.]+,[0-9.]+ L`).MatchString(dom) {
		t.Error("no chart line drawn")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	shot := filepath.Join(dir, "dashboard.png")
	runChromium(t, bin, filepath.Join(dir, "profile"), url, "--screenshot="+shot)
	fi, err := os.Stat(shot)
	if errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() < 10<<10) {
		t.Fatalf("no screenshot at %s (%v)", shot, err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, fi.Size())
}
