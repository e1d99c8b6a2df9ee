package proxy

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

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

// TestNameBit: every name the rewrites act on has its own bit in any case,
// and no other name has one (the length switch in nameBit must match the
// table).
func TestNameBit(t *testing.T) {
	seen := nameSet(0)
	for _, n := range rewriteNames {
		for _, v := range []string{n.name, strings.ToLower(n.name), strings.ToUpper(n.name)} {
			if got := nameBit([]byte(v)); got != n.bit {
				t.Errorf("nameBit(%q) = %b, want %b", v, got, n.bit)
			}
		}
		if seen&n.bit != 0 {
			t.Errorf("%s shares a bit", n.name)
		}
		seen |= n.bit
	}
	for _, v := range []string{"", "T", "Host", "Content-Length", "X-Forwarded-Fox", "Tf", "Connectiom", "X-Request-Ids", "Transfer-Encoding", "Proxy-Authorizatio"} {
		if got := nameBit([]byte(v)); got != 0 {
			t.Errorf("nameBit(%q) = %b, want 0", v, got)
		}
	}
}

// TestFastHeadersAddKeepsLookups pins what fastRequestHeaders.Add relies
// on in fasthttp: a line added with normalizing off (a canonical name) is
// found by any-case lookups afterwards, special headers included, and the
// header normalizes again after it.
func TestFastHeadersAddKeepsLookups(t *testing.T) {
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader("GET / HTTP/1.1\r\nHost: a\r\nx-one: 1\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	f := fastRequestHeaders{&h}
	f.Add("X-Forwarded-For", []byte("1.2.3.4"))
	f.Add("Connection", []byte("Upgrade"))
	if string(h.Peek("x-forwarded-for")) != "1.2.3.4" || !f.Has("X-FORWARDED-FOR") {
		t.Errorf("added line not found: %q", h.Header())
	}
	if string(h.Peek("connection")) != "Upgrade" {
		t.Errorf("Connection %q", h.Peek("connection"))
	}
	h.Set("x-two", "2")
	if !strings.Contains(string(h.Header()), "X-Two: 2\r\n") {
		t.Errorf("normalizing not back on: %q", h.Header())
	}
}

// TestFastHeadersPresent: Present names the lines a request arrived with,
// in any case, including the engine's special ones (Connection: close is
// a flag there), and still names a line deleted since.
func TestFastHeadersPresent(t *testing.T) {
	var h fasthttp.RequestHeader
	head := "GET / HTTP/1.1\r\nhost: a\r\nx-forwarded-for: 1\r\nTE: trailers\r\nCookie: a=1\r\nConnection: close\r\nX-Request-Id:z\r\n\r\n"
	if err := h.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
		t.Fatal(err)
	}
	f := fastRequestHeaders{&h}
	want := nXForwardedFor | nTe | nConnection | nXRequestID
	if got := f.Present(); got != want {
		t.Errorf("Present %b, want %b", got, want)
	}
	f.Del("Te")
	if got := f.Present(); got != want || confirm(f, got) != want&^nTe {
		t.Errorf("after Del: Present %b, confirmed %b", got, confirm(f, got))
	}
	var fresh fasthttp.RequestHeader // never parsed: asked name by name
	fresh.Set("Upgrade", "x")
	if got := (fastRequestHeaders{&fresh}).Present(); got != nUpgrade {
		t.Errorf("unparsed head: Present %b, want %b", got, nUpgrade)
	}
}

func TestCookieValue(t *testing.T) {
	for _, c := range []struct{ lines, name, want string }{
		{"a=1; b=2", "b", "2"},
		{"a=1;b=2", "b", "2"},
		{"a=1|b = \"web-2\" ", "b", "web-2"},
		{"bb=1; b", "b", "<nil>"},
		{"x=1|c; b=3; b=4", "b", "3"},
		{"B=1", "b", "<nil>"},
		{"", "b", "<nil>"},
	} {
		var h fasthttp.RequestHeader
		for _, l := range strings.Split(c.lines, "|") {
			h.Add("Cookie", l)
		}
		got := "<nil>"
		if v := cookieValue(fastRequestHeaders{&h}, c.name); v != nil {
			got = string(v)
		}
		if got != c.want {
			t.Errorf("cookie %q in %q = %q, want %q", c.name, c.lines, got, c.want)
		}
	}
}

// TestFastHeadersHasEmptyLine: a line with an empty value exists. The
// engine's Peek answers nil for it, so Has must not use Peek alone (an
// empty Expect or Keep-Alive line was forwarded: FuzzRewriteRequest).
func TestFastHeadersHasEmptyLine(t *testing.T) {
	var h fasthttp.RequestHeader
	// The head FuzzRewriteRequest found (its seed 60545dac91398a3e).
	if err := h.Read(bufio.NewReader(strings.NewReader("0 / HTTP/0.0\n0000:0\nConneCtion:0000000000\n0000000:\nEXpeCt:\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	f := fastRequestHeaders{&h}
	for _, name := range []string{"Expect", "0000000"} {
		if !f.Has(name) {
			t.Errorf("Has(%q) false for an empty line", name)
		}
	}
	var r fasthttp.ResponseHeader
	if err := r.Read(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nKeep-Alive:\r\nContent-Length: 0\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	if !(fastResponseHeaders{&r}).Has("Keep-Alive") {
		t.Error("response Has(Keep-Alive) false for an empty line")
	}
}
