package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/corral-dev/corral/config"
)

// maxWorkerConns caps pooled connections to one worker. The proxy's own
// admission (max_inflight, the queue) decides how many requests a worker
// gets; this cap only bounds a worker without max_inflight, so a reload
// that raises max_inflight applies to running workers at once.
const maxWorkerConns = 1024

// noWriteDeadline is the write timeout given to the engine's client so that
// it calls SetWriteDeadline before writing each request (where a stale
// pooled connection is caught before any byte of the body is read); the
// connection ignores a deadline this far away.
const noWriteDeadline = 100 * 365 * 24 * time.Hour

// upstream is the connection pool to one backend: a fasthttp HostClient for
// the HTTP/1.1 listener and an http.Transport for the net/http (TLS,
// HTTP/2, h2c) path, each made for the settings in force and made again
// when a reload changes the ones it was made with.
type upstream struct {
	p    *Proxy
	addr string
	hc   atomic.Pointer[hostClient]
	std  atomic.Pointer[stdTransport]
}

// maxResponseHead bounds a worker's response head (status line and
// headers), the same on both engines: fasthttp's read buffer for a worker
// connection is its limit, and net/http's transport is given the same one
// (its own default, 10 MB, would relay on HTTP/2 what is a 502 on
// HTTP/1.1). 8 KiB is nginx's default proxy_buffer_size on most systems.
const maxResponseHead = 8 << 10

// hostClient is a HostClient and the settings it was made with.
type hostClient struct {
	hc      *fasthttp.HostClient
	idleFor time.Duration
}

// stdTransport is a Transport and the settings it was made with.
type stdTransport struct {
	t        *http.Transport
	header   time.Duration
	idleFor  time.Duration
	dialedBy *config.Proxy
}

// newUpstream returns the pool for the worker at addr: host:port, or the
// absolute path of its Unix socket.
func newUpstream(p *Proxy, addr string, _ *config.App) *upstream {
	return &upstream{p: p, addr: addr}
}

// network returns what addr is on: "unix" for a socket path, else "tcp".
func (u *upstream) network() string {
	if strings.HasPrefix(u.addr, "/") {
		return "unix"
	}
	return "tcp"
}

// client returns the fasthttp client for the current settings. The
// response-header timeout and the idle limit are applied per connection
// (upstreamConn) from the settings in force; only the background closing
// of idle connections needs a new client when worker_idle_timeout changes.
func (u *upstream) client() *fasthttp.HostClient {
	idle := u.p.settings.Load().WorkerIdleTimeout
	cur := u.hc.Load()
	if cur != nil && cur.idleFor == idle {
		return cur.hc
	}
	next := &hostClient{idleFor: idle, hc: &fasthttp.HostClient{
		Addr:                          u.addr,
		Dial:                          u.dial,
		MaxConns:                      maxWorkerConns,
		MaxIdleConnDuration:           idle,
		WriteTimeout:                  noWriteDeadline,
		MaxIdemponentCallAttempts:     1, // the proxy retries, on another worker
		RetryIfErr:                    func(*fasthttp.Request, int, error) (bool, bool) { return false, false },
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		NoDefaultUserAgentHeader:      true,
		StreamResponseBody:            true,
		ReadBufferSize:                maxResponseHead,
	}}
	if !u.hc.CompareAndSwap(cur, next) {
		return u.hc.Load().hc
	}
	if cur != nil {
		cur.hc.CloseIdleConnections()
	}
	return next.hc
}

// dial connects to the backend within the dial timeout. Its errors are
// marked as dial errors (the request was not sent).
func (u *upstream) dial(addr string) (net.Conn, error) {
	c, err := u.dialRaw()
	if err != nil {
		return nil, err
	}
	uc := &upstreamConn{Conn: c, p: u.p}
	uc.addr = upstreamAddr{Addr: c.RemoteAddr(), conn: uc}
	return uc, nil
}

// dialRaw opens a plain connection to the backend within the dial timeout.
func (u *upstream) dialRaw() (net.Conn, error) {
	c, err := net.DialTimeout(u.network(), u.addr, u.p.settings.Load().DialTimeout)
	if err != nil {
		return nil, u.p.dialFailed(err)
	}
	return c, nil
}

// CloseIdle closes pooled connections that carry no request; the pool calls
// it once a draining backend has no request in flight.
func (u *upstream) CloseIdle() {
	if c := u.hc.Load(); c != nil {
		c.hc.CloseIdleConnections()
	}
	if t := u.std.Load(); t != nil {
		t.t.CloseIdleConnections()
	}
}

// transport returns the net/http transport for the current settings,
// replacing one made with other timeouts (its idle connections close; its
// requests in flight finish).
func (u *upstream) transport() *http.Transport {
	st := u.p.settings.Load()
	cur := u.std.Load()
	if cur != nil && (cur.dialedBy == st || (cur.header == st.ResponseHeaderTimeout && cur.idleFor == st.WorkerIdleTimeout)) {
		return cur.t
	}
	d := &net.Dialer{}
	next := &stdTransport{header: st.ResponseHeaderTimeout, idleFor: st.WorkerIdleTimeout, dialedBy: st, t: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, u.p.settings.Load().DialTimeout)
			defer cancel()
			c, err := d.DialContext(ctx, u.network(), u.addr)
			if err != nil {
				return nil, u.p.dialFailed(err)
			}
			return c, nil
		},
		MaxIdleConns:           maxWorkerConns,
		MaxIdleConnsPerHost:    maxWorkerConns,
		IdleConnTimeout:        st.WorkerIdleTimeout,
		ResponseHeaderTimeout:  st.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: maxResponseHead,
		DisableCompression:     true,
		ForceAttemptHTTP2:      false,
	}}
	if !u.std.CompareAndSwap(cur, next) {
		return u.std.Load().t
	}
	if cur != nil {
		cur.t.CloseIdleConnections()
	}
	return next.t
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

// upstreamConn is a pooled connection to a backend. Before each request it
// checks (from SetWriteDeadline, which the engine calls before writing
// anything) whether the worker closed it while idle, or it sat idle past
// worker_idle_timeout; on its first read of each response it sets the
// response-header deadline in force, and the engine finds it through
// RemoteAddr to lift that deadline before streaming a body.
type upstreamConn struct {
	net.Conn
	p    *Proxy
	addr upstreamAddr
	// The engine uses a connection from one goroutine at a time.
	answered bool // a response byte was read since the last request began
	armed    bool // the response-header deadline is set for this request
	lastRead time.Time
}

func (c *upstreamConn) Read(b []byte) (int, error) {
	if !c.armed {
		c.armed = true
		if d := c.p.settings.Load().ResponseHeaderTimeout; d > 0 {
			_ = c.Conn.SetReadDeadline(time.Now().Add(d))
		}
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.answered = true
		c.lastRead = time.Now()
	}
	return n, err
}

// SetWriteDeadline starts each request on the connection: the engine calls
// it before writing the request head, so a connection found stale fails
// with nothing sent (not one byte of a streamed body read from the client).
func (c *upstreamConn) SetWriteDeadline(t time.Time) error {
	if c.answered {
		c.answered = false
		c.armed = false
		idle := time.Since(c.lastRead)
		if limit := c.p.settings.Load().WorkerIdleTimeout; limit > 0 && idle > limit {
			return errStaleConn
		}
		if idle > staleAfter && peerClosed(c.Conn) {
			return errStaleConn
		}
	}
	if time.Until(t) > noWriteDeadline/2 {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
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

// abortRead makes a read blocked on the connection that carried a response
// give up: the client it was for has gone.
func abortRead(remote net.Addr) {
	if a, ok := remote.(*upstreamAddr); ok {
		_ = a.conn.Conn.SetReadDeadline(time.Now())
	}
}
