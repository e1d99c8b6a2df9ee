package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/pool"
)

type scaleFunc func(app string, n int) (ScaleResult, error)

func (f scaleFunc) Scale(app string, n int) (ScaleResult, error) { return f(app, n) }

type workerRestartFunc func(ctx context.Context, id string) error

func (f workerRestartFunc) RestartWorker(ctx context.Context, id string) error { return f(ctx, id) }

func postJSON(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("POST %s: content type %q, want application/json", url, ct)
	}
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("POST %s: body not JSON: %v", url, err)
	}
	return resp.StatusCode, m
}

// TestScaleEndpoint checks the answers of POST /apps/{app}/scale: 200 with
// runtime_only for a good request, 400 for bad bodies and values, 404 for
// an unknown app, and that only good requests reach the Scaler.
func TestScaleEndpoint(t *testing.T) {
	var calls []string
	rt := &fakeRuntime{status: sampleStatus()}
	_, addr := startServer(t, Options{Runtime: rt, Scaler: scaleFunc(func(app string, n int) (ScaleResult, error) {
		calls = append(calls, fmt.Sprintf("%s=%d", app, n))
		return ScaleResult{Instances: n, Previous: 3, Configured: 3}, nil
	})})
	code, m := postJSON(t, "http://"+addr+"/apps/web/scale", `{"instances": 5}`)
	if code != 200 || m["result"] != "applied" || m["runtime_only"] != true || m["instances"] != 5.0 ||
		m["previous"] != 3.0 || !strings.Contains(fmt.Sprint(m["note"]), "next reload") {
		t.Errorf("scale web to 5: %d %v", code, m)
	}
	for _, tc := range []struct{ app, body string }{
		{"web", `{"instances": 0}`},
		{"web", `{"instances": 257}`},
		{"web", `{"instances": -2}`},
		{"web", `{"instances": "3"}`},
		{"web", `{"instances": 2.5}`},
		{"web", `{}`},
		{"web", `{"instances": 2, "extra": 1}`},
		{"web", `not json`},
		{"web", ``},
		{"web", `{"instances": 2} {"instances": 3}`},
	} {
		if code, m := postJSON(t, "http://"+addr+"/apps/"+tc.app+"/scale", tc.body); code != 400 || m["result"] != "failed" || m["error"] == "" {
			t.Errorf("body %q: %d %v, want 400 with an error", tc.body, code, m)
		}
	}
	if code, m := postJSON(t, "http://"+addr+"/apps/nope/scale", `{"instances": 2}`); code != 404 || m["error"] != ErrUnknownApp.Error() {
		t.Errorf("unknown app: %d %v, want 404", code, m)
	}
	if fmt.Sprint(calls) != "[web=5]" {
		t.Errorf("scaler calls %v, want only web=5", calls)
	}
}

// TestWorkerRestartEndpoint checks POST /workers/{id}/restart: 200 when
// done, 202 with wait=false, 404 for an unknown worker, 409 when it failed.
func TestWorkerRestartEndpoint(t *testing.T) {
	rt := &fakeRuntime{status: sampleStatus()}
	_, addr := startServer(t, Options{Runtime: rt, WorkerRestarter: workerRestartFunc(func(ctx context.Context, id string) error {
		if id == "web-3" {
			return fmt.Errorf("restarting %s: %w", id, pool.ErrStopped)
		}
		return nil
	})})
	if code, m := postJSON(t, "http://"+addr+"/workers/web-2/restart", ""); code != 200 || m["result"] != "done" || m["worker"] != "web-2" {
		t.Errorf("restart web-2: %d %v", code, m)
	}
	if code, m := postJSON(t, "http://"+addr+"/workers/api-1/restart?wait=false", ""); code != 202 || m["result"] != "started" {
		t.Errorf("restart api-1 without waiting: %d %v", code, m)
	}
	if code, m := postJSON(t, "http://"+addr+"/workers/web-9/restart", ""); code != 404 || m["error"] != ErrUnknownWorker.Error() {
		t.Errorf("restart web-9: %d %v, want 404", code, m)
	}
	if code, m := postJSON(t, "http://"+addr+"/workers/web-3/restart", ""); code != 409 || m["result"] != "failed" {
		t.Errorf("failing restart of web-3: %d %v, want 409", code, m)
	}
}
