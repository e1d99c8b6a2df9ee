package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

const testToken = "s3cret-token-0123456789abcdef"

// endpoint is one route of the admin API with what a request that is let
// through answers.
type endpoint struct {
	method, path, body string
	ok                 int
}

var (
	// mutating are the endpoints that change corral (and /logs, which shows
	// the apps' output): they need the token.
	mutating = []endpoint{
		{"POST", "/reload", "", http.StatusOK},
		{"POST", "/apps/web/restart?wait=false", "", http.StatusAccepted},
		{"POST", "/apps/web/scale", `{"instances": 2}`, http.StatusOK},
		{"POST", "/workers/web-1/restart?wait=false", "", http.StatusAccepted},
		{"GET", "/logs", "", http.StatusOK},
	}
	// readOnly answer anyone who may reach the port.
	readOnly = []endpoint{
		{"GET", "/", "", http.StatusOK},
		{"GET", "/status", "", http.StatusOK},
		{"GET", "/metrics", "", http.StatusOK},
		{"GET", "/healthz", "", http.StatusOK},
		{"GET", "/readyz", "", http.StatusOK},
		{"HEAD", "/readyz", "", http.StatusOK},
	}
)

// accessServer serves an admin API with every optional part present, so
// that each endpoint can answer its success code, under access a.
func accessServer(t *testing.T, a Access, log hclog.Logger) (*Server, string, *atomic.Int32) {
	t.Helper()
	var changes atomic.Int32
	rt := &fakeRuntime{status: sampleStatus(), reload: ReloadResult{Applied: true}}
	opts := Options{
		Runtime:   rt,
		Restarter: restartFunc(func(ctx context.Context, app string) error { changes.Add(1); return nil }),
		Scaler: scaleFunc(func(app string, n int) (ScaleResult, error) {
			changes.Add(1)
			return ScaleResult{Instances: n, Previous: 3, Configured: 3}, nil
		}),
		WorkerRestarter: workerRestartFunc(func(ctx context.Context, id string) error { changes.Add(1); return nil }),
		Logs:            NewLogRing(func() hclog.Level { return hclog.Info }),
		Access:          a,
		Logger:          log,
	}
	srv, addr := startServer(t, opts)
	return srv, addr, &changes
}

// request sends e with the given Host (none: the address) and headers.
func request(t *testing.T, addr string, e endpoint, host string, header ...string) (*http.Response, refusal) {
	t.Helper()
	req, err := http.NewRequest(e.method, "http://"+addr+e.path, strings.NewReader(e.body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := send(req)
	if err != nil {
		t.Fatalf("%s %s: %v", e.method, e.path, err)
	}
	defer resp.Body.Close()
	var ref refusal
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: refusal %d has content type %q, want application/json", e.method, e.path, resp.StatusCode, ct)
		}
		if err := json.NewDecoder(resp.Body).Decode(&ref); err != nil || ref.Result != "failed" || ref.Error == "" {
			t.Errorf("%s %s: refusal %d body %+v (%v), want {result: failed, error: ...}", e.method, e.path, resp.StatusCode, ref, err)
		}
	}
	return resp, ref
}

func TestEveryMutatingEndpointNeedsTheToken(t *testing.T) {
	_, addr, changes := accessServer(t, Access{Listen: "127.0.0.1:9180", Token: testToken}, nil)
	for _, e := range mutating {
		before := changes.Load()
		resp, ref := request(t, addr, e, "")
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s %s without a token = %d (WWW-Authenticate %q), want 401 with Bearer",
				e.method, e.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		for _, wrong := range []string{"Bearer wrong-token-0123456789abcdef", "Bearer " + testToken[:len(testToken)-1], "Basic " + testToken} {
			resp, ref = request(t, addr, e, "", "Authorization", wrong)
			want := http.StatusForbidden
			if strings.HasPrefix(wrong, "Basic") {
				want = http.StatusUnauthorized
			}
			if resp.StatusCode != want {
				t.Errorf("%s %s with %q = %d %q, want %d", e.method, e.path, wrong, resp.StatusCode, ref.Error, want)
			}
		}
		if changes.Load() != before {
			t.Fatalf("%s %s: a refused request changed something", e.method, e.path)
		}
		for _, good := range []string{"Bearer " + testToken, "bearer " + testToken} {
			if resp, ref := request(t, addr, e, "", "Authorization", good); resp.StatusCode != e.ok {
				t.Errorf("%s %s with %q = %d %q, want %d", e.method, e.path, good, resp.StatusCode, ref.Error, e.ok)
			}
		}
		if strings.Contains(e.path, "wait=false") {
			// An accepted restart runs in the background: both must land
			// before the next endpoint takes its count.
			deadline := time.Now().Add(5 * time.Second)
			for changes.Load() != before+2 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := changes.Load(); got != before+2 {
				t.Fatalf("%s %s: %d changes after two accepted requests, want 2", e.method, e.path, got-before)
			}
		}
	}
	for _, e := range readOnly {
		if resp, ref := request(t, addr, e, ""); resp.StatusCode != e.ok {
			t.Errorf("%s %s without a token = %d %q, want %d", e.method, e.path, resp.StatusCode, ref.Error, e.ok)
		}
	}
	// Any other method on any path is guarded before routing: a route added
	// later cannot be left open by mistake.
	for _, e := range []endpoint{{"POST", "/status", "", 0}, {"DELETE", "/apps/web", "", 0}, {"PUT", "/nope", "", 0}} {
		if resp, _ := request(t, addr, e, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without a token = %d, want 401", e.method, e.path, resp.StatusCode)
		}
	}
}

func TestNonLoopbackWithoutATokenIsReadOnly(t *testing.T) {
	var logs syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	// The listener is on 127.0.0.1 as every test's; the rule goes by the
	// configured address, which a container binds on every interface.
	_, addr, changes := accessServer(t, Access{Listen: "0.0.0.0:9180"}, log)
	mustContain(t, logs.String(), "[WARN]", "admin api is read-only", "listen=0.0.0.0:9180", "CORRAL_ADMIN_TOKEN")
	for _, e := range mutating {
		resp, ref := request(t, addr, e, "")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(ref.Error, "read-only") ||
			!strings.Contains(ref.Error, "admin.token") || !strings.Contains(ref.Error, "0.0.0.0:9180") {
			t.Errorf("%s %s = %d %q, want 403 saying it is read-only and how to set a token", e.method, e.path, resp.StatusCode, ref.Error)
		}
		// A token sent to an API that has none does not help.
		if resp, _ := request(t, addr, e, "", "Authorization", "Bearer "+testToken); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s %s with some token = %d, want 403", e.method, e.path, resp.StatusCode)
		}
	}
	if changes.Load() != 0 {
		t.Errorf("the read-only API changed something %d times", changes.Load())
	}
	for _, e := range readOnly {
		if resp, ref := request(t, addr, e, ""); resp.StatusCode != e.ok {
			t.Errorf("%s %s on a read-only API = %d %q, want %d", e.method, e.path, resp.StatusCode, ref.Error, e.ok)
		}
	}
}

func TestLoopbackWithoutATokenAcceptsChanges(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:9180", "[::1]:9180", "localhost:9180", "127.0.0.5:9180"} {
		_, addr, _ := accessServer(t, Access{Listen: listen}, nil)
		for _, e := range mutating {
			if resp, ref := request(t, addr, e, ""); resp.StatusCode != e.ok {
				t.Errorf("listen %s: %s %s = %d %q, want %d", listen, e.method, e.path, resp.StatusCode, ref.Error, e.ok)
			}
		}
	}
}

func TestATokenOpensANonLoopbackAPI(t *testing.T) {
	_, addr, _ := accessServer(t, Access{Listen: ":9180", Token: testToken}, nil)
	for _, e := range mutating {
		if resp, ref := request(t, addr, e, "10.1.2.3:9180", "Authorization", "Bearer "+testToken); resp.StatusCode != e.ok {
			t.Errorf("%s %s with the token = %d %q, want %d", e.method, e.path, resp.StatusCode, ref.Error, e.ok)
		}
	}
}

func TestHostOutsideTheKnownNamesIsRefused(t *testing.T) {
	_, addr, changes := accessServer(t, Access{Listen: "0.0.0.0:9180", Token: testToken,
		Hosts: []string{"corral.internal", "*.corral.svc"}}, nil)
	status := endpoint{"GET", "/status", "", http.StatusOK}
	reload := endpoint{"POST", "/reload", "", http.StatusOK}
	for _, host := range []string{"evil.example", "evil.example:9180", "localhost.evil.example", "corral.internal.evil.example", "corral.svc"} {
		for _, e := range []endpoint{status, reload, {"GET", "/healthz", "", http.StatusOK}} {
			resp, ref := request(t, addr, e, host, "Authorization", "Bearer "+testToken)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(ref.Error, "DNS rebinding") {
				t.Errorf("Host %s: %s %s = %d %q, want 403 naming DNS rebinding", host, e.method, e.path, resp.StatusCode, ref.Error)
			}
		}
	}
	if changes.Load() != 0 {
		t.Errorf("a refused Host changed something")
	}
	for _, host := range []string{"localhost", "LOCALHOST:9180", "127.0.0.1:9180", "[::1]:9180", "10.244.1.7:9180",
		"[fd00::7]:9180", "corral.internal", "corral.internal.:9180", "api.corral.svc:9180", "0.0.0.0:9180"} {
		if resp, ref := request(t, addr, status, host); resp.StatusCode != http.StatusOK {
			t.Errorf("Host %s: GET /status = %d %q, want 200", host, resp.StatusCode, ref.Error)
		}
	}
	_, named, _ := accessServer(t, Access{Listen: "admin.lan:9180"}, nil)
	if resp, ref := request(t, named, status, "admin.lan:9180"); resp.StatusCode != http.StatusOK {
		t.Errorf("Host = the listen host: GET /status = %d %q, want 200", resp.StatusCode, ref.Error)
	}
}

func TestSetAccessAppliesAtOnce(t *testing.T) {
	var logs syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	srv, addr, _ := accessServer(t, Access{Listen: "127.0.0.1:9180"}, log)
	reload := endpoint{"POST", "/reload", "", http.StatusOK}
	if resp, _ := request(t, addr, reload, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("no token on loopback: %d, want 200", resp.StatusCode)
	}
	srv.SetAccess(Access{Listen: "127.0.0.1:9180", Token: testToken})
	if resp, _ := request(t, addr, reload, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after a token is set: %d, want 401", resp.StatusCode)
	}
	rotated := "rotated-token-0123456789abcdef"
	srv.SetAccess(Access{Listen: "127.0.0.1:9180", Token: rotated})
	if resp, _ := request(t, addr, reload, "", "Authorization", "Bearer "+testToken); resp.StatusCode != http.StatusForbidden {
		t.Errorf("the old token after a rotation: %d, want 403", resp.StatusCode)
	}
	if resp, _ := request(t, addr, reload, "", "Authorization", "Bearer "+rotated); resp.StatusCode != http.StatusOK {
		t.Errorf("the new token: %d, want 200", resp.StatusCode)
	}
	if strings.Contains(logs.String(), "read-only") {
		t.Errorf("a loopback API warned about read-only:\n%s", logs.String())
	}
	srv.SetAccess(Access{Listen: "0.0.0.0:9180"})
	srv.SetAccess(Access{Listen: "0.0.0.0:9180"}) // a reload that changes nothing here
	if n := strings.Count(logs.String(), "admin api is read-only"); n != 1 {
		t.Errorf("read-only warned %d times, want once:\n%s", n, logs.String())
	}
	if resp, _ := request(t, addr, reload, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("after the listen moved off loopback without a token: %d, want 403", resp.StatusCode)
	}
	mustContain(t, logs.String(), "admin token changed")
	if strings.Contains(logs.String(), testToken) || strings.Contains(logs.String(), rotated) {
		t.Errorf("a token was logged:\n%s", logs.String())
	}
}
