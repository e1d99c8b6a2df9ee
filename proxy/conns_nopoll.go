//go:build !linux

package proxy

import "github.com/valyala/fasthttp"

// poller is Linux-only; elsewhere every parked connection waits with a
// goroutine of its own (waitParked).
type poller struct{}

func (p *Proxy) pollPark(*clientConn, *fasthttp.Server) bool { return false }

func (p *Proxy) unpoll(*clientConn) {}

func (p *Proxy) stopPoller() {}
