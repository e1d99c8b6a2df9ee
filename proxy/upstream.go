package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/corral-dev/corral/config"
)

// defaultMaxConns caps pooled connections to a worker without max_inflight.
const defaultMaxConns = 1024

// upstream is the connection pool to one backend: a fasthttp HostClient for
// the HTTP/1.1 listener and, created on first use, an http.Transport for
// the net/http (TLS, HTTP/2, h2c) path.
type upstream struct {
	p        *Proxy
	addr     string
	maxConns int
	hc       *fasthttp.HostClient

	stdOnce sync.Once
	std     atomic.Pointer[http.Transport]
}

func newUpstream(p *Proxy, addr string, spec *config.App) *upstream {
	s := p.settings.Load()
	u := &upstream{p: p, addr: addr, maxConns: defaultMaxConns}
	if spec != nil && spec.MaxInflight > 0 {
		u.maxConns = spec.MaxInflight
	}
	u.hc = &fasthttp.HostClient{
		Addr:                          addr,
		Dial:                          u.dial,
		MaxConns:                      u.maxConns,
		MaxIdleConnDuration:           s.WorkerIdleTimeout,
		ReadTimeout:                   s.ResponseHeaderTimeout, // starts once the request is written
		MaxIdemponentCallAttempts:     1,                       // the proxy retries, on another worker
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      true,
		StreamResponseBody:            true,
		ReadBufferSize:                8192,
	}
	return u
}

// dial connects to the backend within the dial timeout. Its errors are
// marked as dial errors (the request was not sent), and the connection
// reports itself through RemoteAddr so the engine can lift the
// response-header deadline once headers have arrived.
func (u *upstream) dial(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, u.p.settings.Load().DialTimeout)
	if err != nil {
		return nil, &dialError{err: err}
	}
	uc := &upstreamConn{Conn: c}
	uc.addr = upstreamAddr{Addr: c.RemoteAddr(), conn: uc}
	return uc, nil
}

// CloseIdle closes pooled connections that carry no request; the pool calls
// it once a draining backend has no request in flight.
func (u *upstream) CloseIdle() {
	u.hc.CloseIdleConnections()
	if t := u.std.Load(); t != nil {
		t.CloseIdleConnections()
	}
}

// transport returns the net/http transport to the backend, creating it on
// first use.
func (u *upstream) transport() *http.Transport {
	u.stdOnce.Do(func() {
		d := &net.Dialer{}
		u.std.Store(&http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				ctx, cancel := context.WithTimeout(ctx, u.p.settings.Load().DialTimeout)
				defer cancel()
				c, err := d.DialContext(ctx, network, u.addr)
				if err != nil {
					return nil, &dialError{err: err}
				}
				return c, nil
			},
			MaxIdleConns:          u.maxConns,
			MaxIdleConnsPerHost:   u.maxConns,
			MaxConnsPerHost:       u.maxConns,
			IdleConnTimeout:       u.p.settings.Load().WorkerIdleTimeout,
			ResponseHeaderTimeout: u.p.settings.Load().ResponseHeaderTimeout,
			DisableCompression:    true,
			ForceAttemptHTTP2:     false,
		})
	})
	return u.std.Load()
}

// staleAfter is how long a pooled connection may sit idle before its next
// request first checks whether the worker closed it meanwhile. Workers
// close idle keep-alive connections on their own schedule (Node after 5s,
// gunicorn after 2s); a request written into such a connection fails
// without the worker seeing it, and only the check tells that apart from
// a worker failing mid-request. Busy connections skip the check.
const staleAfter = 250 * time.Millisecond

// errStaleConn is the check's finding: nothing was sent, so any request
// may go again, and the worker is not to blame.
var errStaleConn = &dialError{err: errors.New("worker closed the idle connection")}

// upstreamConn is a pooled connection to a backend. It lets the engine
// find the connection behind a response (through RemoteAddr) to clear the
// response-header deadline before streaming the body, and it notices
// connections the worker closed while they were idle in the pool.
type upstreamConn struct {
	net.Conn
	addr upstreamAddr
	// answered is set once a response byte has been read and cleared by
	// the next write: the first write of each further request on the conn.
	// The engine uses a connection from one goroutine at a time.
	answered bool
	lastRead time.Time
}

func (c *upstreamConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.answered = true
		c.lastRead = time.Now()
	}
	return n, err
}

func (c *upstreamConn) Write(b []byte) (int, error) {
	if c.answered {
		c.answered = false
		if time.Since(c.lastRead) > staleAfter && peerClosed(c.Conn) {
			return 0, errStaleConn
		}
	}
	return c.Conn.Write(b)
}

func (c *upstreamConn) RemoteAddr() net.Addr { return &c.addr }

// upstreamAddr is the backend address that leads back to its connection.
type upstreamAddr struct {
	net.Addr
	conn *upstreamConn
}

// liftReadDeadline removes the response-header deadline from the
// connection that carried a response whose body is now streamed.
func liftReadDeadline(remote net.Addr) {
	if a, ok := remote.(*upstreamAddr); ok {
		_ = a.conn.Conn.SetReadDeadline(time.Time{})
	}
}
