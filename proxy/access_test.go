package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// lockedBuffer is a log output the proxy's goroutines may share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the lines logged by the "proxy.access" logger.
func (b *lockedBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "proxy.access") {
			out = append(out, sc.Text())
		}
	}
	return out
}

// TestAccessLogLine sends requests through both engines with the access
// log on, in text and in JSON, and checks each line names the app, the
// worker, method, path, status, bytes, request id and client; then that
// turning it off (as a reload does) stops the lines.
func TestAccessLogLine(t *testing.T) {
	big := strings.Repeat("x", 200<<10) // streamed, or buffered: counted by the spool
	w := backend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big":
			w.Write([]byte(big))
		case "/chunked":
			w.Write([]byte("abc"))
			w.(http.Flusher).Flush()
			w.Write([]byte("defg"))
		default:
			w.Header().Set("Content-Length", "5")
			w.Write([]byte("hello"))
		}
	})
	for _, engine := range []string{"fasthttp", "net/http"} {
		for _, mode := range []string{"buffered", "unbuffered"} {
			for _, format := range []string{"text", "json"} {
				t.Run(engine+"/"+mode+"/"+format, func(t *testing.T) {
					out := &lockedBuffer{}
					// warn: the lines must show even when info is filtered.
					log := hclog.New(&hclog.LoggerOptions{Name: "corral", Level: hclog.Warn, Output: out, JSONFormat: format == "json"})
					s := testSettings()
					if mode == "unbuffered" {
						unbuffered(&s.Buffering)
					}
					p := New(s, log)
					f := newFixture(p, testApp("web"), addrOf(w))
					empty := testApp("empty")
					empty.PathPrefix = "/empty"
					setApps(p, f, newFixture(p, empty))
					p.SetAccessLog(true)
					base := startProxy(t, p)
					if engine == "net/http" {
						srv := httptest.NewServer(p.Handler())
						t.Cleanup(srv.Close)
						base = srv.URL
					}
					c := client(t)
					for _, path := range []string{"/hello", "/big", "/chunked", "/empty/x"} {
						get(t, c, base+path, "X-Request-Id", "rid"+path)
					}
					lines := out.lines()
					if len(lines) != 4 {
						t.Fatalf("%d access lines, want 4:\n%s", len(lines), strings.Join(lines, "\n"))
					}
					want := []map[string]string{
						{"app": "web", "worker": "web-1", "method": "GET", "path": "/hello", "status": "200", "bytes": "5", "request_id": "rid/hello", "client": "127.0.0.1"},
						{"app": "web", "worker": "web-1", "method": "GET", "path": "/big", "status": "200", "bytes": strconv.Itoa(len(big)), "request_id": "rid/big", "client": "127.0.0.1"},
						{"app": "web", "worker": "web-1", "method": "GET", "path": "/chunked", "status": "200", "bytes": "7", "request_id": "rid/chunked", "client": "127.0.0.1"},
						{"app": "empty", "worker": "", "method": "GET", "path": "/empty/x", "status": "503", "bytes": strconv.Itoa(len(ErrNoBackend.Body)), "request_id": "rid/empty/x", "client": "127.0.0.1"},
					}
					for i, line := range lines {
						got := parseAccessLine(t, line, format)
						if got["@message"] != "request" {
							t.Errorf("line %d message %q", i, got["@message"])
						}
						if _, err := strconv.ParseFloat(got["duration_ms"], 64); err != nil {
							t.Errorf("line %d duration_ms %q: %v", i, got["duration_ms"], err)
						}
						for k, v := range want[i] {
							if got[k] != v {
								t.Errorf("line %d: %s = %q, want %q\n%s", i, k, got[k], v, line)
							}
						}
					}

					p.SetAccessLog(false)
					get(t, c, base+"/hello")
					if n := len(out.lines()); n != 4 {
						t.Errorf("%d access lines after turning it off, want still 4", n)
					}
				})
			}
		}
	}
}

// parseAccessLine returns an access line's fields: a JSON object's, or
// the key=value pairs of a text line (message as "@message").
func parseAccessLine(t *testing.T, line, format string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if format == "json" {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("access line is not JSON: %v\n%s", err, line)
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				out[k] = v
			case float64:
				out[k] = strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
		return out
	}
	// 2026-12-01T15:18:06.123Z [INFO]  corral.proxy.access: request: app=web worker=web-1 ...
	_, rest, ok := strings.Cut(line, "corral.proxy.access: ")
	if !ok {
		t.Fatalf("not an access line: %s", line)
	}
	msg, kv, _ := strings.Cut(rest, ": ")
	out["@message"] = msg
	for _, f := range strings.Fields(kv) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = strings.Trim(v, `"`)
	}
	return out
}
