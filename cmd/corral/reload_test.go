package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// webApp renders a one-app config with the given instances and greeting.
func webApp(instances int, greeting string, extra string) string {
	return fmt.Sprintf(`
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
log { level = "debug" }
shutdown { timeout = "10s" }
app "web" {
  command       = ["{testapp}"]
  instances     = %d
  env           = { GREETING = %q%s }
  stop_timeout  = "5s"
  start_timeout = "3s"
  backoff {
    min = "50ms"
    max = "1s"
  }
  health {
    path                = "/healthz"
    interval            = "300ms"
    timeout             = "300ms"
    healthy_threshold   = 1
    unhealthy_threshold = 2
  }
}
`, instances, greeting, extra)
}

func startWeb(t *testing.T, instances int) *corralProc {
	c := newCorral(t, webApp(instances, "one", ""))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, fmt.Sprintf("%d ready workers", instances), func() bool {
		return len(c.readyPIDs("web")) == instances
	})
	return c
}

func requireNoFailures(t *testing.T, what string, res loadResult) {
	t.Helper()
	if res.OK == 0 {
		t.Fatalf("%s: the load sent no successful request", what)
	}
	if res.Failed != 0 {
		t.Fatalf("%s: %d of %d requests failed: %v", what, res.Failed, res.OK+res.Failed, res.Errors)
	}
	t.Logf("%s: %d requests, 0 failed", what, res.OK)
}

func TestScaleByEditingTheFileUnderLoad(t *testing.T) {
	c := startWeb(t, 2)
	stop := c.runLoad(4, 60*time.Second)
	for _, n := range []int{4, 1} {
		c.writeConfig(webApp(n, "one", ""))
		waitFor(t, 20*time.Second, fmt.Sprintf("scale to %d", n), func() bool {
			a := c.app("web")
			return a.Instances == n && a.Ready == n && len(a.Workers) == n
		})
	}
	requireNoFailures(t, "scale 2 -> 4 -> 1", stop())
	if lr := c.status().LastReload; lr == nil || !lr.Applied || lr.Trigger != "file" || !strings.Contains(lr.Changes, "4 -> 1") {
		t.Errorf("last reload does not describe the scale: %+v", lr)
	}
}

// rollsTo waits until every ready worker of web differs from before and
// the app is back to n ready workers.
func rollsTo(t *testing.T, c *corralProc, before map[string]int, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, "rolling restart to finish", func() bool {
		now := c.readyPIDs("web")
		if len(now) != n || len(c.app("web").Workers) != n {
			return false
		}
		for id, pid := range now {
			if before[id] == pid {
				return false
			}
		}
		return true
	})
}

func TestEnvChangeRollsWithoutFailedRequests(t *testing.T) {
	c := startWeb(t, 3)
	before := c.readyPIDs("web")
	stop := c.runLoad(4, 60*time.Second)
	c.writeConfig(webApp(3, "two", ""))
	rollsTo(t, c, before, 3)
	requireNoFailures(t, "env change", stop())
	r, _, err := c.get(http.DefaultClient, "/")
	if err != nil || r.Greeting != "two" {
		t.Fatalf("after the roll a worker still answers %+v (%v)", r, err)
	}
}

func TestSIGUSR2RollsWithoutFailedRequests(t *testing.T) {
	c := startWeb(t, 3)
	before := c.readyPIDs("web")
	stop := c.runLoad(4, 60*time.Second)
	c.signal(syscall.SIGUSR2)
	rollsTo(t, c, before, 3)
	requireNoFailures(t, "SIGUSR2", stop())
}

func TestAdminRestartRollsWithoutFailedRequests(t *testing.T) {
	c := startWeb(t, 3)
	before := c.readyPIDs("web")
	stop := c.runLoad(4, 60*time.Second)
	resp, err := http.Post("http://"+c.admin+"/apps/web/restart", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /apps/web/restart: %d", resp.StatusCode)
	}
	rollsTo(t, c, before, 3)
	requireNoFailures(t, "POST /apps/web/restart", stop())

	resp, err = http.Post("http://"+c.admin+"/apps/nope/restart", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("restart of an unknown app: %d, want 404", resp.StatusCode)
	}
}

func TestBrokenConfigKeepsTheRunningOne(t *testing.T) {
	c := startWeb(t, 2)
	before := c.readyPIDs("web")
	broken := webApp(2, "one", "") + "\napp \"api\" {\n  instances = \"many\"\n}\n"
	c.writeConfig(broken)
	line := strings.Count(strings.Split(c.expand(broken), "instances = \"many\"")[0], "\n") + 1
	waitFor(t, 10*time.Second, "the broken config to be seen", func() bool {
		lr := c.status().LastReload
		return lr != nil && !lr.Applied && lr.Trigger == "file"
	})
	lr := c.status().LastReload
	wantPos := fmt.Sprintf("config.hcl:%d:", line)
	if !strings.Contains(strings.Join(lr.Problems, "\n"), wantPos) {
		t.Errorf("problems %q do not name %s", lr.Problems, wantPos)
	}
	if now := c.readyPIDs("web"); fmt.Sprint(now) != fmt.Sprint(before) {
		t.Errorf("workers changed after a broken config: %v -> %v", before, now)
	}
	if _, code, err := c.get(http.DefaultClient, "/"); err != nil || code != 200 {
		t.Errorf("not serving after a broken config: %d %v", code, err)
	}

	// The API and the CLI answer the same outcome.
	resp, err := http.Post("http://"+c.admin+"/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Applied  bool     `json:"applied"`
		Problems []string `json:"problems"`
	}
	json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if resp.StatusCode != 422 || res.Applied || len(res.Problems) == 0 {
		t.Errorf("POST /reload on a broken file: %d %+v", resp.StatusCode, res)
	}
}

func TestChangingOneAppLeavesTheOtherAndItsWebSocketAlone(t *testing.T) {
	tmpl := func(greeting string) string {
		return fmt.Sprintf(`
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "a" {
  command     = ["{testapp}"]
  instances   = 2
  path_prefix = "/a"
  env         = { GREETING = %q }
  stop_timeout = "5s"
  health {
    path     = "/healthz"
    interval = "300ms"
    timeout  = "300ms"
  }
}
app "b" {
  command   = ["{testapp}"]
  instances = 2
  stop_timeout = "5s"
  health {
    path     = "/healthz"
    interval = "300ms"
    timeout  = "300ms"
  }
}
`, greeting)
	}
	c := newCorral(t, tmpl("one"))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "both apps ready", func() bool {
		return len(c.readyPIDs("a")) == 2 && len(c.readyPIDs("b")) == 2
	})
	bBefore := c.readyPIDs("b")
	aBefore := c.readyPIDs("a")

	ws, err := websocket.Dial("ws://"+c.public+"/ws", "", "http://"+c.public+"/")
	if err != nil {
		t.Fatalf("websocket through corral: %v", err)
	}
	defer ws.Close()
	echo := func(msg string) {
		t.Helper()
		ws.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := ws.Write([]byte(msg)); err != nil {
			t.Fatalf("websocket write: %v", err)
		}
		buf := make([]byte, len(msg))
		if _, err := ws.Read(buf); err != nil || string(buf) != msg {
			t.Fatalf("websocket echo: %q %v", buf, err)
		}
	}
	echo("before")

	c.writeConfig(tmpl("two"))
	waitFor(t, 30*time.Second, "app a rolled", func() bool {
		now := c.readyPIDs("a")
		if len(now) != 2 {
			return false
		}
		for id, pid := range now {
			if aBefore[id] == pid {
				return false
			}
		}
		return true
	})
	if now := c.readyPIDs("b"); fmt.Sprint(now) != fmt.Sprint(bBefore) {
		t.Errorf("app b was touched by a change to a: %v -> %v", bBefore, now)
	}
	echo("after")
}

func TestRollToANeverReadyCommandKeepsTheOldWorkers(t *testing.T) {
	c := startWeb(t, 2)
	before := c.readyPIDs("web")
	stop := c.runLoad(2, 60*time.Second)
	c.writeConfig(webApp(2, "one", `, TESTAPP_MODE = "never-ready"`))
	waitFor(t, 30*time.Second, "the roll to fail", func() bool { return c.app("web").Roll.State == "failed" })
	requireNoFailures(t, "failed roll", stop())
	if now := c.readyPIDs("web"); fmt.Sprint(now) != fmt.Sprint(before) {
		t.Errorf("old workers replaced by a failed roll: %v -> %v", before, now)
	}
}

// noPoll turns off the config watcher's poll, so that only file events can
// make a reload: with the poll, a test of watching passes with watching broken.
const noPoll = "CORRAL_CONFIG_POLL=0"

func TestReloadNoticesRenameAndSymlinkSwap(t *testing.T) {
	c := prepareCorral(t)
	c.env = append(c.env, noPoll)
	c.writeConfig(webApp(1, "one", ""))
	c.start()
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "1 ready worker", func() bool { return len(c.readyPIDs("web")) == 1 })

	// Editor style: write a temporary file, rename it over the config.
	tmp := c.config + ".tmp"
	os.WriteFile(tmp, []byte(c.expand(webApp(2, "one", ""))), 0o644)
	if err := os.Rename(tmp, c.config); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "scale to 2 after a rename", func() bool { return c.app("web").Ready == 2 })

	// SIGHUP and `corral reload` reload too (the file did not change: no-op).
	c.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "SIGHUP reload", func() bool {
		lr := c.status().LastReload
		return lr != nil && lr.Trigger == "signal" && lr.Applied
	})
	var out, errOut strings.Builder
	if code := run([]string{"reload", "-admin", c.admin}, &out, &errOut); code != 0 {
		t.Fatalf("corral reload: exit %d: %s", code, errOut.String())
	}
}

func TestReloadNoticesConfigMapSymlinkSwap(t *testing.T) {
	c := prepareCorral(t)
	// A Kubernetes ConfigMap volume: config.hcl -> ..data/config.hcl, ..data -> ..v1.
	version := func(name string, instances int) {
		if err := os.Mkdir(filepath.Join(c.dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(c.dir, name, "config.hcl"), []byte(c.expand(webApp(instances, "one", ""))), 0o644)
	}
	version("..v1", 1)
	os.Symlink("..v1", filepath.Join(c.dir, "..data"))
	os.Symlink("..data/config.hcl", c.config)
	c.env = append(c.env, noPoll)
	c.start()
	c.waitReady(30 * time.Second)

	// The kubelet's swap: a new version dir, a new link renamed over ..data.
	version("..v2", 3)
	os.Symlink("..v2", filepath.Join(c.dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(c.dir, "..data_tmp"), filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(c.dir, "..v1"))
	waitFor(t, 20*time.Second, "scale to 3 after a ConfigMap swap", func() bool { return c.app("web").Ready == 3 })
}

func TestChangedListenRebindsWithoutDroppingInFlightRequests(t *testing.T) {
	c := startWeb(t, 2)
	oldPublic := c.public

	// A slow request is in flight on the old address during the change.
	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + oldPublic + "/slow?ms=1500")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		slow <- err
	}()
	waitFor(t, 10*time.Second, "the slow request in flight", func() bool {
		for _, w := range c.app("web").Workers {
			if w.State == "ready" && c.inflight(w.ID) > 0 {
				return true
			}
		}
		return false
	})

	c.public = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c.writeConfig(webApp(2, "one", ""))
	waitFor(t, 20*time.Second, "the new address to serve", func() bool {
		_, code, err := c.get(http.DefaultClient, "/")
		return err == nil && code == 200
	})
	if err := <-slow; err != nil {
		t.Fatalf("the request in flight on the old address failed: %v", err)
	}
	if lr := c.status().LastReload; lr == nil || !lr.Applied {
		t.Fatalf("listen change not applied: %+v", lr)
	}
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	if _, err := fresh.Get("http://" + oldPublic + "/"); err == nil {
		t.Errorf("the old address %s still accepts connections", oldPublic)
	}
}
