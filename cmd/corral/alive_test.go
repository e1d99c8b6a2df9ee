package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// The apps' heartbeats are pool.App.Alive (tested in pool); this checks the
// reload goroutine's, which an instance without apps isolates.
func TestAliveFailsWhileTheReloadGoroutineIsStuck(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	in := &instance{
		reloads:  make(chan reloadRequest),
		pings:    make(chan chan struct{}),
		removing: map[*pool.App]time.Duration{},
	}
	in.state.Store(&state{cfg: &config.Config{}, apps: map[string]*pool.App{}})

	// Nobody runs the reload loop: as if a reload never returned.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err := in.Alive(ctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "reload") {
		t.Fatalf("Alive with a stuck reload goroutine = %v, want an error naming it", err)
	}

	loopCtx, stopLoop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Only pings arrive, so runReloads needs nothing else of in.
		in.runReloads(loopCtx)
	}()
	defer func() {
		stopLoop()
		<-done
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := in.Alive(ctx); err != nil {
		t.Fatalf("Alive with the reload loop running = %v", err)
	}
}

func TestHealthzAnswers200OnARunningCorral(t *testing.T) {
	c := startWeb(t, 2)
	resp, code := getAdmin(t, c, "/healthz")
	if code != 200 || !strings.Contains(resp, "ok") {
		t.Fatalf("GET /healthz on a healthy corral: %d %q", code, resp)
	}
}

// getAdmin GETs path on corral's admin API and returns the body and status.
func getAdmin(t *testing.T, c *corralProc, path string) (string, int) {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body), resp.StatusCode
}
