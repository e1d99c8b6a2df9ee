package main

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// corralCLI runs a client command of corral in-process against c's admin
// API and returns its exit code and output.
func corralCLI(c *corralProc, args ...string) (int, string) {
	var out, errb bytes.Buffer
	code := run(append(args[:1:1], append([]string{"-admin", c.admin}, args[1:]...)...), &out, &errb)
	return code, out.String() + errb.String()
}

// TestScaleAndRestartOverTheAPIUnderLoad drives `corral scale` and
// `corral restart` against a loaded corral: every change is zero-downtime,
// the answers say a scale is runtime-only, a reload restores the file's
// instances, and restarts show their cause in /status.
func TestScaleAndRestartOverTheAPIUnderLoad(t *testing.T) {
	c := startWeb(t, 2)
	stop := c.runLoad(4, 90*time.Second)

	code, out := corralCLI(c, "scale", "web", "3")
	if code != 0 || !strings.Contains(out, "2 -> 3") || !strings.Contains(out, "runtime only") {
		t.Fatalf("corral scale web 3: exit %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "3 ready workers", func() bool { return len(c.readyPIDs("web")) == 3 })

	before := c.readyPIDs("web")
	code, out = corralCLI(c, "restart", "web", "2")
	if code != 0 {
		t.Fatalf("corral restart web 2: exit %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "web-2 replaced", func() bool {
		p := c.readyPIDs("web")
		return len(p) == 3 && p["web-2"] != before["web-2"]
	})
	after := c.readyPIDs("web")
	if after["web-1"] != before["web-1"] || after["web-3"] != before["web-3"] {
		t.Errorf("restart of web-2 replaced others: %v -> %v", before, after)
	}

	code, out = corralCLI(c, "restart", "web")
	if code != 0 {
		t.Fatalf("corral restart web: exit %d: %s", code, out)
	}
	code, out = corralCLI(c, "scale", "web", "1")
	if code != 0 {
		t.Fatalf("corral scale web 1: exit %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "1 worker", func() bool {
		return len(c.readyPIDs("web")) == 1 && len(c.app("web").Workers) == 1
	})
	requireNoFailures(t, "scale and restart over the API", stop())

	if w := c.app("web").Workers[0]; w.ID != "web-1" || w.Restarts != 0 || w.ByCause["manual"] != 1 {
		t.Errorf("%s: restarts %d replacements %v after one rolling restart, want 0 and 1 manual", w.ID, w.Restarts, w.ByCause)
	}

	if code, out := corralCLI(c, "scale", "web", "0"); code != 1 || !strings.Contains(out, "1..256") {
		t.Errorf("corral scale web 0: exit %d: %s", code, out)
	}
	if code, out := corralCLI(c, "scale", "nope", "2"); code != 1 || !strings.Contains(out, "unknown app") {
		t.Errorf("corral scale nope 2: exit %d: %s", code, out)
	}
	if code, out := corralCLI(c, "restart", "web", "web-7"); code != 1 || !strings.Contains(out, "unknown worker") {
		t.Errorf("corral restart web web-7: exit %d: %s", code, out)
	}

	// A reload of the unchanged file restores its instances = 2.
	if code, _ := corralCLI(c, "scale", "web", "3"); code != 0 {
		t.Fatal("scale web 3 failed")
	}
	waitFor(t, 20*time.Second, "3 ready workers", func() bool { return len(c.readyPIDs("web")) == 3 })
	if code, out := corralCLI(c, "reload"); code != 0 {
		t.Fatalf("corral reload: exit %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "the file's 2 workers after a reload", func() bool {
		a := c.app("web")
		return len(c.readyPIDs("web")) == 2 && len(a.Workers) == 2 && a.Instances == 2
	})
}

// TestMaxMemoryRecyclesUnderLoadWithoutFailedRequests makes one worker of
// two grow 64 MiB past max_memory while a load runs: that worker is
// replaced (restart cause recycle), the other is not, and no request fails.
func TestMaxMemoryRecyclesUnderLoadWithoutFailedRequests(t *testing.T) {
	cfg := strings.Replace(webApp(2, "one", ""), "  health {",
		"  recycle {\n    max_memory     = \"48MiB\"\n    check_interval = \"100ms\"\n  }\n  health {", 1)
	c := newCorral(t, cfg)
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "2 ready workers", func() bool { return len(c.readyPIDs("web")) == 2 })
	before := c.readyPIDs("web")
	stop := c.runLoad(4, 60*time.Second)

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + c.public + "/grow")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	grown := strings.TrimSpace(string(body))
	if resp.StatusCode != 200 || before[grown] == 0 {
		t.Fatalf("GET /grow: %d %q", resp.StatusCode, grown)
	}
	other := map[string]string{"web-1": "web-2", "web-2": "web-1"}[grown]
	waitFor(t, 20*time.Second, grown+" recycled", func() bool {
		p := c.readyPIDs("web")
		return len(p) == 2 && p[grown] != before[grown] && len(c.app("web").Workers) == 2
	})
	requireNoFailures(t, "recycling for max_memory", stop())
	after := c.readyPIDs("web")
	if after[other] != before[other] {
		t.Errorf("%s was replaced too", other)
	}
	for _, w := range c.app("web").Workers {
		want := map[bool]int{true: 1, false: 0}[w.ID == grown]
		if w.ByCause["recycle"] != want || w.Restarts != 0 {
			t.Errorf("%s: restarts %d replacements %v, want 0 and %d recycle", w.ID, w.Restarts, w.ByCause, want)
		}
	}
}
