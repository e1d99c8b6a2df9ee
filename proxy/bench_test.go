package proxy

import (
	"fmt"
	"net"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"
)

// BenchmarkFastProxy measures a proxied keep-alive GET over loopback with
// every feature on (request ids, passive health, queue configured). The
// numbers include the client and the worker running in the same process;
// compare against nginx with the bench/ scripts for the real target.
func BenchmarkFastProxy(b *testing.B) {
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	worker := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("hello world\n") }}
	go func() { _ = worker.Serve(wln) }()
	defer func() { _ = worker.Shutdown() }()

	p := New(testSettings(), hclog.NewNullLogger())
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
