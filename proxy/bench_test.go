package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"
)

// BenchmarkFastProxy measures a proxied keep-alive GET over loopback with
// every feature on (request ids, passive health, queue configured). The
// numbers include the client and the worker running in the same process;
// compare against nginx with the bench/ scripts for the real target.
func BenchmarkFastProxy(b *testing.B) {
	benchFastProxy(b, New(testSettings(), hclog.NewNullLogger()))
}

// BenchmarkAccessLog is BenchmarkFastProxy with the access log off (its
// allocs/op must be BenchmarkFastProxy's) and on, writing text lines to
// io.Discard: the price of turning it on.
func BenchmarkAccessLog(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			p := New(testSettings(), hclog.New(&hclog.LoggerOptions{Output: io.Discard}))
			p.SetAccessLog(on)
			benchFastProxy(b, p)
		})
	}
}

// benchFastProxy measures small GETs through p's fasthttp engine to a
// fasthttp worker, from 16 parallel clients.
func benchFastProxy(b *testing.B, p *Proxy) {
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	worker := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello world\n") }}
	go func() { _ = worker.Serve(wln) }()
	defer func() { _ = worker.Shutdown() }()

	app := testApp("web")
	app.Passive.Failures = 5
	app.Passive.Count5xx = true
	f := newFixture(p, app, wln.Addr().String())
	setApps(p, f)
	addr := serveOn(b, p, p.Serve)

	c := &fasthttp.HostClient{Addr: addr, MaxConns: 64, Dial: func(a string) (net.Conn, error) { return net.Dial("tcp", a) }}
	defer c.CloseIdleConnections()
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://bench/")
		for pb.Next() {
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				b.Errorf("proxied request: %v %d", err, resp.StatusCode())
				return
			}
		}
	})
}

// BenchmarkFastProxyBody relays 64 KiB and 1 MiB responses and uploads,
// buffered (the defaults) and unbuffered, so the cost of buffering for fast
// clients is a ratio measured in one run.
func BenchmarkFastProxyBody(b *testing.B) {
	for _, size := range []int{64 << 10, 1 << 20} {
		body := make([]byte, size)
		wln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		worker := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
			if ctx.IsPost() {
				ctx.SetBodyString("ok")
				return
			}
			ctx.SetBody(body)
		}, MaxRequestBodySize: 8 << 20}
		go func() { _ = worker.Serve(wln) }()
		for _, mode := range []string{"buffered", "unbuffered"} {
			for _, dir := range []string{"download", "upload"} {
				b.Run(fmt.Sprintf("%s/%dKiB/%s", dir, size>>10, mode), func(b *testing.B) {
					s := testSettings()
					s.MaxBodyBytes = 8 << 20
					if mode == "unbuffered" {
						unbuffered(&s.Buffering)
					}
					p := New(s, hclog.NewNullLogger())
					f := newFixture(p, testApp("web"), wln.Addr().String())
					setApps(p, f)
					addr := serveOn(b, p, p.Serve)
					c := &fasthttp.HostClient{Addr: addr, MaxConns: 16, Dial: func(a string) (net.Conn, error) { return net.Dial("tcp", a) }}
					defer c.CloseIdleConnections()
					b.SetBytes(int64(size))
					b.ReportAllocs()
					b.SetParallelism(4)
					b.ResetTimer()
					b.RunParallel(func(pb *testing.PB) {
						req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
						defer fasthttp.ReleaseRequest(req)
						defer fasthttp.ReleaseResponse(resp)
						req.SetRequestURI("http://bench/")
						if dir == "upload" {
							req.Header.SetMethod("POST")
							req.SetBody(body)
						}
						for pb.Next() {
							if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
								b.Errorf("proxied request: %v %d", err, resp.StatusCode())
								return
							}
						}
					})
				})
			}
		}
		_ = worker.Shutdown()
	}
}

// BenchmarkRewriteRequest measures the request head's rewrite on the
// fasthttp engine's headers: a client that sends only Host (wrk, curl) and
// one that sends a browser's set, with request ids on.
func BenchmarkRewriteRequest(b *testing.B) {
	heads := map[string]string{
		"minimal": "GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n",
		"browser": "GET /page?q=1 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n" +
			"Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n" +
			"Referer: https://bench.test/\r\nCookie: session=abc123; theme=dark\r\nUpgrade-Insecure-Requests: 1\r\n" +
			"Sec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\nConnection: keep-alive\r\n\r\n",
	}
	for _, name := range []string{"minimal", "browser"} {
		b.Run(name, func(b *testing.B) {
			var orig fasthttp.RequestHeader
			if err := orig.Read(bufio.NewReader(strings.NewReader(heads[name]))); err != nil {
				b.Fatal(err)
			}
			var h fasthttp.RequestHeader
			fw := forwarding{peer: netip.MustParseAddr("127.0.0.1"), proto: strHTTP, host: []byte("bench.test"), start: time.Now(), ids: newRequestIDs()}
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			for b.Loop() {
				orig.CopyTo(&h)
				_, _, buf = rewriteRequest(fastRequestHeaders{&h}, &fw, buf[:0])
			}
		})
	}
}

// BenchmarkNameWithSpace measures the HTTP/1.1 engine's per-request check
// for a header name with a space, on a browser's head (about 240 ns here;
// 600 ns with bytes.Cut and ContainsAny per line).
func BenchmarkNameWithSpace(b *testing.B) {
	raw := []byte("Host: bench.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml\r\n" +
		"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nReferer: https://bench.test/\r\n" +
		"Cookie: session=abc123; theme=dark\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n" +
		"Sec-Fetch-Mode: navigate\r\nConnection: keep-alive\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if nameWithSpace(raw) {
			b.Fatal("no name here has a space")
		}
	}
}
