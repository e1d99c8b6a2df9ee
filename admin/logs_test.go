package admin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ringLogger is a root logger that keeps its lines in a ring, as corral's is.
func ringLogger() (hclog.Logger, *LogRing) {
	log := hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "corral", Output: io.Discard, Level: hclog.Info})
	ring := NewLogRing(log.GetLevel)
	log.RegisterSink(ring)
	return log, ring
}

func texts(lines []LogLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Text
	}
	return out
}

func TestLogRingKeepsRecentLinesPerApp(t *testing.T) {
	log, ring := ringLogger()
	pool := log.Named("pool")
	log.Info("corral started", "listen", "127.0.0.1:8080")
	log.Debug("below the level")
	pool.With("app", "web", "worker", "web-1").Info("GET / 200")
	pool.With("app", "api").Warn("slow start", "after", "3s")
	for i := range ringLines + 500 {
		pool.With("app", "chatty").Info(fmt.Sprintf("line %d", i))
	}

	all, _, _ := ring.recent("", 10000, false)
	got := strings.Join(texts(all), "\n")
	mustContain(t, got, "[INFO]  corral: corral started: listen=127.0.0.1:8080",
		"corral.pool: GET / 200: app=web worker=web-1", "[WARN]  corral.pool: slow start: app=api after=3s",
		fmt.Sprintf("line %d", ringLines+499))
	if strings.Contains(got, "below the level") {
		t.Error("a debug line was kept at level info")
	}
	// The chatty app pushed out only its own oldest lines.
	if strings.Contains(got, "line 499: ") || strings.Contains(got, "line 0:") {
		t.Error("the chatty app's ring was not bounded")
	}
	chatty, _, _ := ring.recent("chatty", 10000, false)
	if len(chatty) != ringLines || !strings.HasSuffix(chatty[0].Text, "line 500: app=chatty") {
		t.Errorf("chatty kept %d lines from %q, want %d from line 500", len(chatty), chatty[0].Text, ringLines)
	}
	web, _, _ := ring.recent("web", 10, false)
	if len(web) != 1 || web[0].App != "web" {
		t.Errorf("web's lines = %q, want its one line", texts(web))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("lines out of order at %d: %d after %d", i, all[i].Seq, all[i-1].Seq)
		}
	}
	last2, _, _ := ring.recent("", 2, false)
	if len(last2) != 2 || last2[1].Seq != all[len(all)-1].Seq {
		t.Errorf("the latest 2 lines = %q", texts(last2))
	}
}

func TestLogRingCutsLongLines(t *testing.T) {
	log, ring := ringLogger()
	log.Info(strings.Repeat("é", maxRingLine)) // two bytes each: the cut falls inside one
	lines, _, _ := ring.recent("", 1, false)
	if n := len(lines[0].Text); n > maxRingLine+len("…") || !strings.HasSuffix(lines[0].Text, "é…") {
		t.Errorf("a long line kept as %d bytes ending %q", n, lines[0].Text[len(lines[0].Text)-8:])
	}
}

// TestLogsEndpointFollows reads GET /logs?follow=1 over a real connection:
// the recent lines first, then lines logged later, only the app's; the
// handler ends when the client leaves (goleak checks the goroutines).
func TestLogsEndpointFollows(t *testing.T) {
	log, ring := ringLogger()
	web := log.Named("pool").With("app", "web", "worker", "web-1")
	web.Info("before the request")
	log.Info("corral's own line")
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: sampleStatus()}, Logs: ring, Logger: log})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/logs?app=web&follow=1&lines=5", nil)
	resp, err := send(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Fatalf("GET /logs = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			t.Fatal("no log line within 5s")
			return ""
		}
	}
	if l := next(); !strings.Contains(l, "before the request: app=web") {
		t.Fatalf("first line %q, want the recent web line", l)
	}
	log.Info("another line of corral's")
	log.Named("pool").With("app", "api").Info("api output")
	web.Info("after the request", "stream", "stderr")
	if l := next(); !strings.Contains(l, "after the request: app=web worker=web-1 stream=stderr") {
		t.Errorf("followed line %q, want the new web line and no other app's", l)
	}
	waitFor(t, "one follower", func() bool { ring.mu.Lock(); defer ring.mu.Unlock(); return len(ring.followers) == 1 })
	cancel()
	waitFor(t, "the follower gone after the client left", func() bool {
		ring.mu.Lock()
		defer ring.mu.Unlock()
		return len(ring.followers) == 0
	})
	for range lines {
	}
}

func TestLogsEndpointAnswers(t *testing.T) {
	log, ring := ringLogger()
	log.Info("hello")
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: sampleStatus()}, Logs: ring, Logger: log})
	if code, _, body := do(t, "GET", addr, "/logs"); code != 200 || !strings.Contains(body, "corral: hello") {
		t.Errorf("GET /logs = %d %q", code, body)
	}
	if code, ct, body := do(t, "GET", addr, "/logs?app=nope"); code != 404 || ct != "application/json" || !strings.Contains(body, "unknown app") {
		t.Errorf("GET /logs?app=nope = %d %s %q, want 404 JSON", code, ct, body)
	}
	if code, _, _ := do(t, "GET", addr, "/logs?lines=-1"); code != 400 {
		t.Errorf("GET /logs?lines=-1 = %d, want 400", code)
	}
	_, bare := startServer(t, Options{Runtime: &fakeRuntime{}})
	if code, _, _ := do(t, "GET", bare, "/logs"); code != 501 {
		t.Errorf("GET /logs without a ring = %d, want 501", code)
	}
}

func TestShutdownEndsLogFollowers(t *testing.T) {
	log, ring := ringLogger()
	srv, addr := startServer(t, Options{Runtime: &fakeRuntime{status: sampleStatus()}, Logs: ring, Logger: log})
	req, _ := http.NewRequest("GET", "http://"+addr+"/logs?follow=1", nil)
	resp, err := send(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		read <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a log follower: %v", err)
	}
	select {
	case err := <-read:
		if err != nil {
			t.Errorf("the stream ended with %v, want a clean end", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the log stream did not end at Shutdown")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Shutdown took %s with a follower", d)
	}
}
