package proxy

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// h2specPath finds the h2spec binary (.ci/run installs a pinned version).
// Without it the test is skipped, unless CORRAL_H2SPEC=required (CI).
func h2specPath(t *testing.T) string {
	if p, err := exec.LookPath("h2spec"); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(os.Getenv("HOME"), "go", "bin")} {
		if p := filepath.Join(dir, "h2spec"); dir != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if os.Getenv("CORRAL_H2SPEC") == "required" {
		t.Fatal("h2spec not found (go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible)")
	}
	t.Skip("h2spec not installed")
	return ""
}

var h2specSummary = regexp.MustCompile(`(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed`)

// TestH2Spec runs the HTTP/2 conformance suite against the TLS listener and
// the h2c listener: every case must pass.
func TestH2Spec(t *testing.T) {
	bin := h2specPath(t)
	be := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	for _, mode := range []string{"tls", "h2c"} {
		t.Run(mode, func(t *testing.T) {
			s := testSettings()
			args := []string{"-h", "127.0.0.1", "-o", "5"} // per-case timeout: the machine is shared
			var addr string
			if mode == "tls" {
				cert, key, _ := selfSigned(t)
				s.TLS = &config.TLS{Cert: cert, Key: key}
				p := newTestProxy(t, s)
				setApps(p, newFixture(p, testApp("web"), be))
				addr = serveOn(t, p, p.ServeTLS)
				args = append(args, "-t", "-k")
			} else {
				s.H2C = true
				p := newTestProxy(t, s)
				setApps(p, newFixture(p, testApp("web"), be))
				addr = serveOn(t, p, p.Serve)
			}
			args = append(args, "-p", addr[strings.LastIndexByte(addr, ':')+1:])
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			out, _ := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			m := h2specSummary.FindStringSubmatch(string(out))
			if m == nil {
				t.Fatalf("h2spec gave no summary:\n%s", out)
			}
			if m[4] != "0" {
				t.Errorf("h2spec %s: %s\n%s", mode, m[0], failures(string(out)))
			} else {
				t.Logf("h2spec %s: %s", mode, m[0])
			}
		})
	}
}

// failures returns the failed cases of h2spec's report.
func failures(out string) string {
	if i := strings.Index(out, "Failures:"); i >= 0 {
		return out[i:]
	}
	return out
}
