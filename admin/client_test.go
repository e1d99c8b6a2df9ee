package admin

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/pool"
)

func TestFetchStatus(t *testing.T) {
	want := sampleStatus()
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: want}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	got, err := Client{Addr: addr}.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != want.Version || got.PID != want.PID || !got.StartedAt.Equal(want.StartedAt) || got.Listen != want.Listen {
		t.Errorf("header fields = %+v", got)
	}
	if len(got.Apps) != 2 || len(got.Apps[0].Workers) != 3 || got.Apps[0].Workers[1].ID != "web-2" || got.Apps[0].Workers[1].Restarts != 1 {
		t.Errorf("apps = %+v", got.Apps)
	}
	if got.LastReload == nil || got.LastReload.Changes != want.LastReload.Changes {
		t.Errorf("last reload = %+v", got.LastReload)
	}
	if h := got.Apps[0].Workers[0].Health; h == nil || h.LastLatencyMillis != 2.5 {
		t.Errorf("health = %+v", h)
	}
}

func TestRequestReload(t *testing.T) {
	rt := &fakeRuntime{reload: ReloadResult{Applied: true, Changes: "web: 2 -> 4 instances"}}
	_, addr := startServer(t, Options{Runtime: rt})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	res, err := Client{Addr: addr}.Reload(ctx)
	if err != nil || !res.Applied || res.Changes != "web: 2 -> 4 instances" || res.Trigger != TriggerAPI {
		t.Errorf("applied reload = %+v, %v", res, err)
	}

	problem := "config.hcl:12:3: app.web.instances: must be at least 1"
	rt.mu.Lock()
	rt.reload = ReloadResult{Problems: []string{problem}}
	rt.mu.Unlock()
	res, err = Client{Addr: addr}.Reload(ctx)
	if err != nil {
		t.Fatalf("invalid config must not be a transport error: %v", err)
	}
	if res.Applied || len(res.Problems) != 1 || res.Problems[0] != problem {
		t.Errorf("invalid reload = %+v", res)
	}
}

func TestClientErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// A port nobody listens on: take one and free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	if err := (Client{Addr: dead}).Health(ctx); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("CheckHealth on a closed port = %v, want connection refused", err)
	}
	if _, err := (Client{Addr: dead}).Status(ctx); err == nil {
		t.Error("FetchStatus on a closed port succeeded")
	}
	if _, err := (Client{Addr: dead}).Reload(ctx); err == nil {
		t.Error("RequestReload on a closed port succeeded")
	}

	// Something that is not a healthy corral admin API.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	broken := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	})}
	done := make(chan struct{})
	go func() { broken.Serve(ln); close(done) }()
	defer func() { broken.Close(); <-done }()

	var he *HTTPError
	if err := (Client{Addr: ln.Addr().String()}).Health(ctx); !errors.As(err, &he) || he.Code != 503 || he.Body != "overloaded" {
		t.Errorf("CheckHealth against a 503 = %v, want HTTPError 503 overloaded", err)
	}
	if _, err := (Client{Addr: ln.Addr().String()}).Status(ctx); !errors.As(err, &he) {
		t.Errorf("FetchStatus against a 503 = %v, want HTTPError", err)
	}
	if _, err := (Client{Addr: ln.Addr().String()}).Reload(ctx); !errors.As(err, &he) {
		t.Errorf("RequestReload against a 503 = %v, want HTTPError", err)
	}
}

func TestCheckHealth(t *testing.T) {
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := (Client{Addr: addr}).Health(ctx); err != nil {
		t.Errorf("CheckHealth = %v", err)
	}
	// ":PORT" means loopback, as a bare admin.listen port would.
	_, port, _ := net.SplitHostPort(addr)
	if err := (Client{Addr: ":" + port}).Health(ctx); err != nil {
		t.Errorf("CheckHealth(:port) = %v", err)
	}
	if err := (Client{Addr: "http://" + addr + "/"}).Health(ctx); err != nil {
		t.Errorf("CheckHealth(url) = %v", err)
	}
}

func TestWriteStatusTable(t *testing.T) {
	s := sampleStatus()
	now := testStart.Add(90 * time.Minute)
	var buf bytes.Buffer
	writeStatusTable(&buf, s, now)
	out := buf.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")

	mustContain(t, lines[0], "corral 1.2.3", "pid 4242", "listen 127.0.0.1:8080", "config /srv/config.hcl", "up 1h30m")
	mustContain(t, lines[1], "last reload:", "(file)", "applied: web: 2 -> 3 instances")
	mustContain(t, lines[2], "web 2/3 ready 1 queued roll done", "api 1/1 ready")

	s.Apps[1].Autoscale = &pool.AutoscaleStatus{Min: 1, Max: 4, Current: 1,
		Last: &pool.ScaleDecision{Direction: pool.ScaleDown, From: 2, To: 1, At: now.Add(-2 * time.Minute)}}
	buf.Reset()
	writeStatusTable(&buf, s, now)
	mustContain(t, strings.Split(buf.String(), "\n")[2], "api 1/1 ready autoscale 1..4 (last down 2->1 2m0s ago)")

	var header int
	for i, l := range lines {
		if strings.HasPrefix(l, "APP") {
			header = i
		}
	}
	if got := strings.Fields(lines[header]); strings.Join(got, " ") != "APP WORKER PID PORT STATE RESTARTS INFLIGHT REQUESTS UPTIME REASON" {
		t.Fatalf("header = %q", lines[header])
	}
	rows := lines[header+1:]
	want := [][]string{
		{"web", "web-1", "101", "20001", "ready", "0", "3", "10", "1h30m", "-"},
		{"web", "web-2", "102", "20002", "ready", "1", "0", "0", "1h30m", "ejected:", "5", "failures"},
		{"web", "web-3", "-", "-", "backoff", "4", "0", "0", "-", "exit", "status", "1"},
		{"api", "api-1", "201", "/run/user/1000/corral-4242-1/api-1.1.sock", "ready", "0", "0", "0", "1h30m", "-"},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows = %d, want %d:\n%s", len(rows), len(want), out)
	}
	for i, w := range want {
		if got := strings.Fields(rows[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("row %d = %q, want %q", i, got, w)
		}
	}
	// Columns line up: every row's STATE starts where the header's does.
	col := strings.Index(lines[header], "STATE")
	for _, r := range rows {
		if !strings.HasPrefix(r[col:], "ready") && !strings.HasPrefix(r[col:], "backoff") {
			t.Errorf("STATE column misaligned in %q", r)
		}
	}
}

func TestWriteStatusTableProblemsAndShutdown(t *testing.T) {
	s := Status{
		Version:      "1.0",
		ShuttingDown: true,
		LastReload: &ReloadResult{At: testStart, Trigger: TriggerSignal, Problems: []string{
			"config.hcl:3:5: app.web.instances: must be at least 1",
			"config.hcl:9:1: app.api.command: required",
		}},
		Apps: []pool.AppStatus{{Name: "idle", Instances: 0}},
	}
	var buf bytes.Buffer
	WriteStatusTable(&buf, s)
	mustContain(t, buf.String(),
		"SHUTTING DOWN",
		"invalid, 2 problem(s), old config kept",
		"  config.hcl:3:5: app.web.instances: must be at least 1",
		"  config.hcl:9:1: app.api.command: required",
		"no workers",
	)
}
