package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/corral-dev/corral/pool"
)

func TestDashboard(t *testing.T) {
	st := sampleStatus()
	st.LastReload = &ReloadResult{Trigger: TriggerFile, Problems: []string{"config.hcl:4:2: app.web.instances: must be at least 1"}}
	st.Apps[0].Workers[0].MemoryBytes = 50 << 20
	st.Apps[0].Autoscale = &pool.AutoscaleStatus{Min: 1, Max: 6, Current: 3}
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: st}})

	code, ctype, body := do(t, "GET", addr, "/")
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") {
		t.Fatalf("GET / = %d %q", code, ctype)
	}
	mustContain(t, body,
		"<h2>web</h2>", "<h2>api</h2>",
		"2/3 ready", "1/1 ready",
		"web-1", "web-3", `class="state state-backoff"`, "20001", "/run/user/1000/corral-4242-1/api-1.1.sock",
		"Reload config", "Rolling restart", `data-app="web"`,
		"app.web.instances: must be at least 1",
		"setInterval(refresh, 2000)",
		// Per worker: memory, a restart button; per app: autoscale bounds.
		"50.0 MiB", `class="secondary small restart-worker" type="button" data-worker="web-2"`, "autoscale 1..6",
		// The script asks for history and sends the kept token on changes.
		`getJSON("history")`, `"Bearer " + tk`, "sessionStorage",
	)
	// Self-contained: nothing loads from elsewhere.
	for _, bad := range []string{"<link", "src=\"http", "src='http", "@import"} {
		if strings.Contains(body, bad) {
			t.Errorf("dashboard references an external asset (%q)", bad)
		}
	}
}

func TestDashboardEscapes(t *testing.T) {
	evil := `<script>alert("x")</script>`
	st := sampleStatus()
	st.Apps[0].Name = evil
	st.Apps[0].Workers[0].Reason = `<img src=x onerror=alert(1)>`
	st.LastReload = &ReloadResult{Problems: []string{`<b>bold</b>`}}
	_, addr := startServer(t, Options{Runtime: &fakeRuntime{status: st}})

	_, _, body := do(t, "GET", addr, "/")
	for _, raw := range []string{evil, `<img src=x`, `<b>bold</b>`} {
		if strings.Contains(body, raw) {
			t.Errorf("dashboard contains unescaped %q", raw)
		}
	}
	mustContain(t, body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;", "&lt;b&gt;bold&lt;/b&gt;")
	// The script renders with textContent only, never as markup.
	if strings.Contains(body, "innerHTML") {
		t.Error("dashboard script uses innerHTML")
	}
}
