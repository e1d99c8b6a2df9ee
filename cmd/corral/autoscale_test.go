package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// autoscaleApp is webApp with max_inflight = 1 and an autoscale block of
// short windows between lo and hi.
func autoscaleApp(lo, hi int) string {
	return strings.Replace(webApp(lo, "one", ""), "  health {", fmt.Sprintf(`  max_inflight = 1
  queue {
    timeout = "20s"
  }
  autoscale {
    min              = %d
    max              = %d
    scale_up_after   = "200ms"
    scale_down_after = "1s"
    cooldown         = "100ms"
    check_interval   = "50ms"
  }
  health {`, lo, hi), 1)
}

// hammer sends GET path from clients keep-alive clients, each pausing
// pause between requests, until stop is called or limit passes.
func (c *corralProc) hammer(clients int, path string, pause, limit time.Duration) (stop func() loadResult) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	var (
		mu  sync.Mutex
		res = loadResult{Workers: map[string]bool{}}
		wg  sync.WaitGroup
	)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 30 * time.Second}
			defer client.CloseIdleConnections()
			for n := 0; n < 100000 && ctx.Err() == nil; n++ {
				resp, err := client.Get("http://" + c.public + path)
				code := 0
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				if err == nil && code == 200 {
					res.OK++
				} else {
					res.Failed++
					if len(res.Errors) < 10 {
						res.Errors = append(res.Errors, fmt.Sprintf("%s: status %d err %v at %s", path, code, err, time.Now().Format("15:04:05.000")))
					}
				}
				mu.Unlock()
				time.Sleep(pause)
			}
		}()
	}
	return func() loadResult {
		cancel()
		wg.Wait()
		return res
	}
}

type wireAutoscale struct {
	Min     int `json:"min"`
	Max     int `json:"max"`
	Current int `json:"current"`
	Last    *struct {
		Direction string    `json:"direction"`
		From      int       `json:"from"`
		To        int       `json:"to"`
		Reason    string    `json:"reason"`
		At        time.Time `json:"at"`
	} `json:"last"`
}

// autoscale returns the autoscale part of app web's status.
func (c *corralProc) autoscale() wireAutoscale {
	c.t.Helper()
	as := c.app("web").Autoscale
	if as == nil {
		c.t.Fatal("no autoscale in the status of web")
	}
	return *as
}

// TestAutoscaleBurstUpToMaxAndBackOneAtATime sends a burst of slow
// requests to an app of min 1 / max 4 with max_inflight = 1: it scales to
// 4; after the burst it returns to 1, one worker at a time; no request
// fails, of the burst nor of a light load that runs throughout. Then a
// runtime scale outside the bounds is refused with 400 and a reload that
// raises min grows the app without restarting its worker.
func TestAutoscaleBurstUpToMaxAndBackOneAtATime(t *testing.T) {
	c := newCorral(t, autoscaleApp(1, 4))
	c.waitReady(30 * time.Second)
	waitFor(t, 20*time.Second, "1 ready worker", func() bool { return len(c.readyPIDs("web")) == 1 })
	light := c.hammer(1, "/", 50*time.Millisecond, 90*time.Second)
	burst := c.hammer(8, "/slow?ms=300", 0, 30*time.Second)

	waitFor(t, 20*time.Second, "4 ready workers in the burst", func() bool { return len(c.readyPIDs("web")) == 4 })
	if as := c.autoscale(); as.Current != 4 || as.Min != 1 || as.Max != 4 || as.Last == nil || as.Last.Direction != "up" {
		t.Errorf("autoscale status in the burst: %+v", as)
	}
	// The burst goes on at max: the app stays at 4.
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if a := c.app("web"); a.Instances > 4 || len(a.Workers) > 4 {
			t.Fatalf("above max: instances %d, %d workers", a.Instances, len(a.Workers))
		}
	}
	requireNoFailures(t, "the burst", burst())

	seen := []int{4}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a := c.app("web")
		leaving := 0
		for _, w := range a.Workers {
			if w.State == "draining" || w.State == "stopping" {
				leaving++
			}
		}
		if leaving > 1 {
			t.Fatalf("%d workers leaving at once: %+v", leaving, a.Workers)
		}
		if a.Instances != seen[len(seen)-1] {
			seen = append(seen, a.Instances)
		}
		if a.Instances == 1 && len(a.Workers) == 1 && a.Ready == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if fmt.Sprint(seen) != "[4 3 2 1]" {
		t.Fatalf("instances after the burst went %v, want [4 3 2 1]", seen)
	}
	if as := c.autoscale(); as.Last == nil || as.Last.Direction != "down" || as.Last.Reason == "" {
		t.Errorf("last decision %+v, want down with a reason", as.Last)
	}
	metrics := getText(t, "http://"+c.admin+"/metrics")
	for _, want := range []string{`corral_autoscale_min{app="web"} 1`, `corral_autoscale_max{app="web"} 4`,
		`corral_autoscale_decisions_total{app="web",direction="down"} 3`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Out of bounds over the API: 400, nothing changes.
	if code, out := corralCLI(c, "scale", "web", "5"); code != 1 || !strings.Contains(out, "1..4") {
		t.Errorf("corral scale web 5 with max 4: exit %d: %s", code, out)
	}
	resp, err := http.Post("http://"+c.admin+"/apps/web/scale", "application/json", strings.NewReader(`{"instances": 5}`))
	if err != nil {
		t.Fatal(err)
	}
	var answer struct{ Result, Error string }
	decodeErr := json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if resp.StatusCode != 400 || decodeErr != nil || answer.Result != "failed" || !strings.Contains(answer.Error, "1..4") {
		t.Errorf("POST scale 5 with max 4: %d %+v (%v), want 400 JSON failed", resp.StatusCode, answer, decodeErr)
	}
	if code, out := corralCLI(c, "scale", "web", "3"); code != 0 || !strings.Contains(out, "autoscal") {
		t.Errorf("corral scale web 3 within 1..4: exit %d: %s", code, out)
	}
	waitFor(t, 20*time.Second, "3 workers after scale 3", func() bool { return len(c.readyPIDs("web")) == 3 })
	// Idle, autoscaling takes it from there back to 1.
	waitFor(t, 30*time.Second, "back to 1 after the runtime scale", func() bool {
		a := c.app("web")
		return a.Instances == 1 && len(a.Workers) == 1 && a.Ready == 1
	})

	// A reload raising min to 2 grows the app; web-1 keeps running.
	pid := c.readyPIDs("web")["web-1"]
	c.writeConfig(autoscaleApp(2, 4))
	waitFor(t, 20*time.Second, "2 workers after min = 2", func() bool {
		p := c.readyPIDs("web")
		return len(p) == 2 && c.app("web").Instances == 2
	})
	if now := c.readyPIDs("web")["web-1"]; now != pid {
		t.Errorf("web-1 restarted by a reload of the bounds: pid %d -> %d", pid, now)
	}
	if as := c.autoscale(); as.Min != 2 || as.Max != 4 {
		t.Errorf("bounds after the reload %+v, want 2..4", as)
	}
	requireNoFailures(t, "the light load", light())
}

// getText fetches url's body.
func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
