package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/corral-dev/corral/config"
)

// headerEcho is a worker answering with the request header named by the
// X-Echo request header, plus the path it saw.
func headerEcho(t *testing.T) string {
	return addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		for _, k := range strings.Split(r.Header.Get("X-Echo"), ",") {
			w.Header().Set("Echo-"+k, r.Header.Get(k))
		}
		_, _ = io.WriteString(w, r.URL.RequestURI())
	}))
}

// bothEngines runs f against the fasthttp listener and the net/http handler.
func bothEngines(t *testing.T, s config.Proxy, apps func(p *Proxy) []*appFixture, f func(t *testing.T, url string)) {
	for _, engine := range []string{"fasthttp", "net/http"} {
		t.Run(engine, func(t *testing.T) {
			p := newTestProxy(t, s)
			setApps(p, apps(p)...)
			url := ""
			if engine == "fasthttp" {
				url = startProxy(t, p)
			} else {
				srv := httptest.NewServer(p.Handler())
				t.Cleanup(srv.Close)
				url = srv.URL
			}
			f(t, url)
		})
	}
}

func TestTrustedProxiesKeepForwardedFor(t *testing.T) {
	be := headerEcho(t)
	one := func(p *Proxy) []*appFixture { return []*appFixture{newFixture(p, testApp("web"), be)} }
	untrusted := testSettings()
	bothEngines(t, untrusted, one, func(t *testing.T, url string) {
		_, _, h := get(t, client(t), url+"/", "X-Echo", "X-Forwarded-For,X-Forwarded-Host", "X-Forwarded-For", "6.6.6.6", "X-Forwarded-Host", "evil")
		if h.Get("Echo-X-Forwarded-For") != "127.0.0.1" || h.Get("Echo-X-Forwarded-Host") == "evil" {
			t.Fatalf("untrusted peer's forwarded headers kept: %v", h)
		}
	})
	trustedS := testSettings()
	trustedS.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	bothEngines(t, trustedS, one, func(t *testing.T, url string) {
		_, _, h := get(t, client(t), url+"/", "X-Echo", "X-Forwarded-For", "X-Forwarded-For", "6.6.6.6")
		if got := h.Get("Echo-X-Forwarded-For"); got != "6.6.6.6, 127.0.0.1" {
			t.Fatalf("trusted X-Forwarded-For %q", got)
		}
	})
}

func TestRequestIDPassedThroughAndEchoed(t *testing.T) {
	be := headerEcho(t)
	bothEngines(t, testSettings(), func(p *Proxy) []*appFixture { return []*appFixture{newFixture(p, testApp("web"), be)} },
		func(t *testing.T, url string) {
			_, _, h := get(t, client(t), url+"/", "X-Echo", "X-Request-Id,X-Request-Start", "X-Request-Id", "abc-123")
			if h.Get("Echo-X-Request-Id") != "abc-123" || h.Get("X-Request-Id") != "abc-123" {
				t.Fatalf("request id not passed/echoed: %v", h)
			}
			if !strings.HasPrefix(h.Get("Echo-X-Request-Start"), "t=") || len(h.Get("Echo-X-Request-Start")) != 18 {
				t.Fatalf("X-Request-Start %q, want t=<16 digit microseconds>", h.Get("Echo-X-Request-Start"))
			}
			_, _, h2 := get(t, client(t), url+"/", "X-Echo", "X-Request-Id")
			_, _, h3 := get(t, client(t), url+"/", "X-Echo", "X-Request-Id")
			if h2.Get("X-Request-Id") == "" || h2.Get("X-Request-Id") == h3.Get("X-Request-Id") {
				t.Fatalf("generated ids %q %q", h2.Get("X-Request-Id"), h3.Get("X-Request-Id"))
			}
		})
}

func TestHopByHopRemovedBothEngines(t *testing.T) {
	be := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"Keep-Alive", "Te", "X-Private", "Proxy-Authorization", "Trailer"} {
			if r.Header.Get(k) != "" {
				w.Header().Set("Leaked", k)
			}
		}
		w.Header().Set("Connection", "X-Internal")
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("Proxy-Authenticate", "x")
	}))
	bothEngines(t, testSettings(), func(p *Proxy) []*appFixture { return []*appFixture{newFixture(p, testApp("web"), be)} },
		func(t *testing.T, url string) {
			_, _, h := get(t, client(t), url+"/", "Connection", "X-Private", "X-Private", "1", "Keep-Alive", "timeout=1", "Te", "gzip", "Proxy-Authorization", "x")
			if h.Get("Leaked") != "" {
				t.Fatalf("hop-by-hop request header %s reached the worker", h.Get("Leaked"))
			}
			if h.Get("X-Internal") != "" || h.Get("Proxy-Authenticate") != "" {
				t.Fatalf("hop-by-hop response headers reached the client: %v", h)
			}
		})
}

func TestRoutingStripAnd404(t *testing.T) {
	apiBE, webBE := headerEcho(t), headerEcho(t)
	apps := func(p *Proxy) []*appFixture {
		api := testApp("api")
		api.PathPrefix, api.StripPrefix = "/api", true
		web := testApp("web")
		web.Hosts = []string{"www.example.com"}
		return []*appFixture{newFixture(p, api, apiBE), newFixture(p, web, webBE)}
	}
	bothEngines(t, testSettings(), apps, func(t *testing.T, url string) {
		c := client(t)
		if code, body, _ := get(t, c, url+"/api/users?id=1"); code != 200 || body != "/users?id=1" {
			t.Fatalf("strip: %d %q", code, body)
		}
		if code, body, _ := get(t, c, url+"/api"); code != 200 || body != "/" {
			t.Fatalf("strip to root: %d %q", code, body)
		}
		if code, body, _ := get(t, c, url+"/page", "Host", "WWW.example.com"); code != 200 || body != "/page" {
			t.Fatalf("host route: %d %q", code, body)
		}
		code, body, h := get(t, c, url+"/nothing")
		if code != 404 || !strings.HasPrefix(body, "404") || h.Get("Content-Type") != "text/plain; charset=utf-8" {
			t.Fatalf("no route: %d %q", code, body)
		}
	})
}

func TestStickyCookieEndToEnd(t *testing.T) {
	var addrs []string
	for _, name := range []string{"a", "b", "c"} {
		addrs = append(addrs, addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, name) })))
	}
	var fx *appFixture
	apps := func(p *Proxy) []*appFixture {
		app := testApp("web")
		app.Balance = config.BalanceCookie
		app.StickyCookie = "srv"
		fx = newFixture(p, app, addrs...)
		return []*appFixture{fx}
	}
	bothEngines(t, testSettings(), apps, func(t *testing.T, url string) {
		c := client(t)
		_, first, h := get(t, c, url+"/")
		ck := h.Get("Set-Cookie")
		if !strings.HasPrefix(ck, "srv=web-") || !strings.Contains(ck, "HttpOnly") || !strings.Contains(ck, "SameSite=Lax") || !strings.Contains(ck, "Path=/") {
			t.Fatalf("cookie %q", ck)
		}
		value := strings.SplitN(strings.SplitN(ck, ";", 2)[0], "=", 2)[1]
		for range 10 {
			_, body, h := get(t, c, url+"/", "Cookie", "srv="+value)
			if body != first || h.Get("Set-Cookie") != "" {
				t.Fatalf("sticky request went to %q (cookie %q), want %q", body, h.Get("Set-Cookie"), first)
			}
		}
		// Its worker leaves rotation: fall back and re-stick.
		for _, b := range fx.backends() {
			if b.ID == value {
				b.Draining.Store(true)
			}
		}
		_, moved, h := get(t, c, url+"/", "Cookie", "srv="+value)
		if moved == first || !strings.HasPrefix(h.Get("Set-Cookie"), "srv=web-") {
			t.Fatalf("after leave: %q cookie %q", moved, h.Get("Set-Cookie"))
		}
	})
}

func TestStdRetriesRefusedWorker(t *testing.T) {
	var hits hitLog
	p := newTestProxy(t, testSettings())
	f := newFixture(p, roundRobinApp(), refusedAddr(t), okBackend(t, "good", &hits))
	setApps(p, f)
	srv := httptest.NewServer(p.Handler())
	defer srv.Close()
	code, body := do(t, client(t), "POST", srv.URL+"/", "x")
	if code != 200 || body != "good" || f.stats.Retries.Load() != 1 {
		t.Fatalf("net/http path: %d %q retries %d", code, body, f.stats.Retries.Load())
	}
}
