package proxy

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
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

func TestReloadKeepsQueueAndAppliesRoutes(t *testing.T) {
	hb, addr := newHoldingBackend(t)
	p := newTestProxy(t, testSettings())
	app := testApp("web")
	app.MaxInflight = 1
	f := newFixture(p, app, addr)
	setApps(p, f)
	url := startProxy(t, p)
	c := client(t)
	out := make(chan result, 2)
	go send(context.Background(), c, url, 0, out)
	waitFor(t, "first request at the backend", 5*time.Second, func() bool { return len(hb.order()) == 1 })
	go send(context.Background(), c, url, 1, out)
	waitFor(t, "queued", 5*time.Second, func() bool { return f.stats.Queued.Load() == 1 })
	// Reload: same app (new spec value), plus a new app under /new.
	app2 := *app
	f.app = &app2
	other := newFixture(p, testApp("other"), addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("other")) })))
	other.app.PathPrefix = "/new"
	setApps(p, f, other)
	if code, body, _ := get(t, c, url+"/new/x"); code != 200 || body != "other" {
		t.Fatalf("new route: %d %q", code, body)
	}
	hb.release()
	for range 2 {
		if r := <-out; r.code != 200 {
			t.Fatalf("request across reload: %+v", r)
		}
	}
}

func TestCloseIdleClosesPooledConnections(t *testing.T) {
	var closed atomic.Int64
	be := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	be.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	be.Start()
	t.Cleanup(be.Close)
	p := newTestProxy(t, testSettings())
	f := newFixture(p, testApp("web"), addrOf(be))
	setApps(p, f)
	url := startProxy(t, p)
	if code, _, _ := get(t, client(t), url+"/"); code != 200 {
		t.Fatal(code)
	}
	if closed.Load() != 0 {
		t.Fatal("worker connection closed before CloseIdle")
	}
	f.backends()[0].Upstream.CloseIdle()
	waitFor(t, "pooled connection to close", 5*time.Second, func() bool { return closed.Load() == 1 })
}

func TestRebindFinishesRequestsOnOldListener(t *testing.T) {
	hb, addr := newHoldingBackend(t)
	p := newTestProxy(t, testSettings())
	setApps(p, newFixture(p, testApp("web"), addr))
	var lns []net.Listener
	serveDone := make(chan error, 2)
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		go func() { serveDone <- p.Serve(ln) }()
	}
	defer func() {
		hb.release()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-serveDone
	}()
	oldURL, newURL := "http://"+lns[0].Addr().String(), "http://"+lns[1].Addr().String()
	out := make(chan result, 1)
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	go send(context.Background(), &http.Client{Transport: tr}, oldURL, 0, out)
	waitFor(t, "request on the old listener", 5*time.Second, func() bool { return len(hb.order()) == 1 })
	_ = lns[0].Close()
	if err := <-serveDone; err != nil {
		t.Fatalf("serve on the closed listener: %v", err)
	}
	if code, _, _ := get(t, client(t), newURL+"/"); code != 200 {
		t.Fatalf("new listener answered %d", code)
	}
	hb.release()
	if r := <-out; r.err != nil || r.code != 200 {
		t.Fatalf("request on the closed listener: %+v", r)
	}
}

func TestHeadAndBodylessAnswers(t *testing.T) {
	be := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(204)
		case "/304":
			w.WriteHeader(304)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = w.Write([]byte("hello"))
		}
	}))
	bothEngines(t, testSettings(), func(p *Proxy) []*appFixture { return []*appFixture{newFixture(p, testApp("web"), be)} },
		func(t *testing.T, url string) {
			c := client(t)
			for range 2 { // twice: the worker connection must stay usable
				resp, err := c.Head(url + "/")
				if err != nil {
					t.Fatal(err)
				}
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || resp.ContentLength != 5 {
					t.Fatalf("HEAD: %d length %d", resp.StatusCode, resp.ContentLength)
				}
				for _, path := range []string{"/204", "/304"} {
					if code, body, _ := get(t, c, url+path); code != int(path[1]-'0')*100+int(path[3]-'0') || body != "" {
						t.Fatalf("%s: %d %q", path, code, body)
					}
				}
				if code, body, _ := get(t, c, url+"/"); code != 200 || body != "hello" {
					t.Fatalf("GET after: %d %q", code, body)
				}
			}
		})
}
