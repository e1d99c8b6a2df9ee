package proxy

import (
	"net/http"
	"testing"
)

func TestForwardsAndSetsHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		h.Set("Host", r.Host)
		h.Set("Uri", r.RequestURI)
		got <- h
		w.Header().Set("X-From", "backend")
		w.Header().Set("Keep-Alive", "timeout=5")
		_, _ = w.Write([]byte("hello"))
	})
	p := newTestProxy(t, testSettings())
	f := newFixture(p, testApp("web"), addrOf(be))
	setApps(p, f)
	url := startProxy(t, p)
	c := client(t)
	code, body, hdr := get(t, c, url+"/a/b?x=1", "Host", "Example.COM:8080", "Keep-Alive", "1", "Connection", "X-Secret", "X-Secret", "s", "X-Forwarded-For", "6.6.6.6")
	if code != 200 || body != "hello" {
		t.Fatalf("got %d %q", code, body)
	}
	h := <-got
	checks := map[string]string{
		"Host":              "Example.COM:8080",
		"Uri":               "/a/b?x=1",
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "Example.COM:8080",
		"Keep-Alive":        "",
		"X-Secret":          "",
	}
	for k, want := range checks {
		if h.Get(k) != want {
			t.Errorf("backend saw %s = %q, want %q", k, h.Get(k), want)
		}
	}
	if h.Get("X-Request-Start") == "" || h.Get("X-Request-Id") == "" {
		t.Errorf("missing X-Request-Start/Id: %v", h)
	}
	if hdr.Get("X-Request-Id") != h.Get("X-Request-Id") {
		t.Errorf("response id %q != request id %q", hdr.Get("X-Request-Id"), h.Get("X-Request-Id"))
	}
	if hdr.Get("X-From") != "backend" || hdr.Get("Keep-Alive") != "" {
		t.Errorf("response headers: %v", hdr)
	}
	if n := f.backends()[0].Stats.Requests.Load(); n != 1 {
		t.Errorf("observed %d requests, want 1", n)
	}
	if n := f.backends()[0].Inflight.Load(); n != 0 {
		t.Errorf("inflight %d after request, want 0", n)
	}
}
