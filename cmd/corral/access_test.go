package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// withAdmin replaces the admin block of a webApp config.
func withAdmin(cfg, block string) string {
	const line = `admin { listen = "{admin}" }`
	if !strings.Contains(cfg, line) {
		panic("config has no admin line to replace")
	}
	return strings.Replace(cfg, line, block, 1)
}

// adminCall does one request to corral's admin API with the given token
// ("" = none) and Host ("" = the address) and returns the status code and
// body.
func (c *corralProc) adminCall(method, path, token, host string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+c.admin+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if host != "" {
		req.Host = host
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestAdminTokenFromATokenFile runs corral with admin.token_file: the
// mutating endpoints want the token (401 without, 403 when wrong), the CLI
// finds it in a flag, the environment or the config file, and a rotated
// file applies without a restart.
func TestAdminTokenFromATokenFile(t *testing.T) {
	const first, rotated = "first-token-0123456789abcdef", "rotated-token-0123456789abcdef"
	c := prepareCorral(t)
	tokenFile := filepath.Join(c.dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.writeConfig(withAdmin(webApp(1, "one", ""), "admin {\n  listen = \"{admin}\"\n  token_file = \"admin.token\"\n}"))
	c.start()
	c.waitReady(30 * time.Second)

	if code, body := c.adminCall("POST", "/reload", "", ""); code != 401 || !strings.Contains(body, "Bearer") {
		t.Errorf("POST /reload without the token = %d %s, want 401", code, body)
	}
	if code, body := c.adminCall("POST", "/apps/web/restart", "wrong-token-0123456789abcdef", ""); code != 403 {
		t.Errorf("POST /apps/web/restart with a wrong token = %d %s, want 403", code, body)
	}
	if code, body := c.adminCall("POST", "/reload", first, ""); code != 200 {
		t.Errorf("POST /reload with the token = %d %s, want 200", code, body)
	}
	if code, _ := c.adminCall("GET", "/status", "", ""); code != 200 {
		t.Errorf("GET /status without a token = %d, want 200", code)
	}

	t.Setenv("CORRAL_ADMIN_TOKEN", "")
	t.Setenv("CORRAL_CONFIG", filepath.Join(t.TempDir(), "none.hcl"))
	if code, out := corralCLI(c, "reload"); code != 1 || !strings.Contains(out, "401") {
		t.Errorf("corral reload with no token anywhere: exit %d: %s", code, out)
	}
	if code, out := corralCLI(c, "reload", "-token", first); code != 0 {
		t.Errorf("corral reload -token: exit %d: %s", code, out)
	}
	if code, out := corralCLI(c, "scale", "web", "1", "-config", c.config); code != 0 {
		t.Errorf("corral scale -config (the token from its token_file): exit %d: %s", code, out)
	}
	t.Setenv("CORRAL_CONFIG", c.config)
	if code, out := corralCLI(c, "restart", "web"); code != 0 {
		t.Errorf("corral restart with CORRAL_CONFIG: exit %d: %s", code, out)
	}
	t.Setenv("CORRAL_ADMIN_TOKEN", "wrong-token-0123456789abcdef")
	if code, out := corralCLI(c, "reload"); code != 1 || !strings.Contains(out, "403") || !strings.Contains(out, "wrong admin token") {
		t.Errorf("corral reload with a wrong CORRAL_ADMIN_TOKEN (it comes before the config): exit %d: %s", code, out)
	}
	t.Setenv("CORRAL_ADMIN_TOKEN", first)
	if code, out := corralCLI(c, "reload"); code != 0 {
		t.Errorf("corral reload with CORRAL_ADMIN_TOKEN: exit %d: %s", code, out)
	}

	// The watcher watches the token file: a rotation applies by itself.
	if err := os.WriteFile(tokenFile, []byte(rotated+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the rotated token accepted", func() bool {
		code, _ := c.adminCall("POST", "/reload", rotated, "")
		return code == 200
	})
	if code, _ := c.adminCall("POST", "/reload", first, ""); code != 403 {
		t.Errorf("the old token after the rotation = %d, want 403", code)
	}
	if log := c.logText(); strings.Contains(log, first) || strings.Contains(log, rotated) {
		t.Error("corral logged the token")
	}
}

// TestEnvTokenComesBeforeTheFile: $CORRAL_ADMIN_TOKEN is the token even
// when the file sets one, and a weak one stops corral from starting.
func TestEnvTokenComesBeforeTheFile(t *testing.T) {
	const fileToken, envToken = "file-token-0123456789abcdef", "env-token-0123456789abcdef"
	cfg := withAdmin(webApp(1, "one", ""), "admin {\n  listen = \"{admin}\"\n  token = \""+fileToken+"\"\n}")
	c := prepareCorral(t)
	c.env = []string{"CORRAL_ADMIN_TOKEN=" + envToken}
	c.writeConfig(cfg)
	c.start()
	c.waitReady(30 * time.Second)
	if code, _ := c.adminCall("POST", "/reload", envToken, ""); code != 200 {
		t.Errorf("the environment's token = %d, want 200", code)
	}
	if code, _ := c.adminCall("POST", "/reload", fileToken, ""); code != 403 {
		t.Errorf("the file's token beside CORRAL_ADMIN_TOKEN = %d, want 403", code)
	}
	if !strings.Contains(c.logText(), "CORRAL_ADMIN_TOKEN is set: the admin token of the config file is not used") {
		t.Error("corral did not say that the environment's token wins")
	}

	weak := prepareCorral(t)
	weak.env = []string{"CORRAL_ADMIN_TOKEN=short"}
	weak.writeConfig(cfg)
	weak.start()
	if code := weak.wait(15 * time.Second); code != 1 || !strings.Contains(weak.logText(), "CORRAL_ADMIN_TOKEN: must be at least 16 characters") {
		t.Errorf("a weak CORRAL_ADMIN_TOKEN: exit %d, log:\n%s", code, weak.logText())
	}
}

// TestWildcardAdminWithoutATokenIsReadOnly binds the admin API on every
// interface, as a container does, and talks to it on 127.0.0.1 only: it
// answers the read-only endpoints and refuses changes with the reason
// until a reload adds a token; a Host naming another site is refused.
func TestWildcardAdminWithoutATokenIsReadOnly(t *testing.T) {
	c := prepareCorral(t)
	port := c.admin[strings.LastIndex(c.admin, ":")+1:]
	block := "admin {\n  listen = \"0.0.0.0:" + port + "\"\n}"
	c.writeConfig(withAdmin(webApp(1, "one", ""), block))
	c.start()
	c.waitReady(30 * time.Second)
	if log := c.logText(); !strings.Contains(log, "[WARN]  corral.admin: admin api is read-only") {
		t.Errorf("no read-only warning at start:\n%s", log)
	}
	for _, path := range []string{"/", "/status", "/metrics", "/healthz", "/readyz"} {
		if code, body := c.adminCall("GET", path, "", ""); code != 200 {
			t.Errorf("GET %s on the read-only API = %d %.200s, want 200", path, code, body)
		}
	}
	for _, path := range []string{"/reload", "/apps/web/restart", "/apps/web/scale", "/workers/web-1/restart"} {
		code, body := c.adminCall("POST", path, "", "")
		if code != 403 || !strings.Contains(body, "read-only") || !strings.Contains(body, "CORRAL_ADMIN_TOKEN") {
			t.Errorf("POST %s on the read-only API = %d %s, want 403 saying why", path, code, body)
		}
	}
	if code, out := corralCLI(c, "logs", "-f=false"); code != 1 || !strings.Contains(out, "read-only") {
		t.Errorf("corral logs on the read-only API: exit %d: %s", code, out)
	}
	if code, body := c.adminCall("GET", "/status", "", "rebound.example:"+port); code != 403 || !strings.Contains(body, "DNS rebinding") {
		t.Errorf("GET /status with Host rebound.example = %d %s, want 403", code, body)
	}
	if code, _ := c.adminCall("GET", "/healthz", "", "10.0.0.7:"+port); code != 200 {
		t.Errorf("a probe with Host = a pod IP = %d, want 200", code)
	}

	const token = "added-token-0123456789abcdef"
	c.writeConfig(withAdmin(webApp(1, "one", ""), "admin {\n  listen = \"0.0.0.0:"+port+"\"\n  token = \""+token+"\"\n}"))
	waitFor(t, 15*time.Second, "the token from the reload", func() bool {
		code, _ := c.adminCall("POST", "/reload", "", "")
		return code == 401
	})
	if code, body := c.adminCall("POST", "/reload", token, ""); code != 200 {
		t.Errorf("POST /reload with the new token = %d %s, want 200", code, body)
	}
	if log := c.logText(); !strings.Contains(log, "admin api accepts changes again") {
		t.Errorf("the reload that added a token did not say so:\n%s", log)
	}
}
