// Package proxy is corral's public reverse proxy: it routes each request to
// an app by host and path, picks a worker by the app's balancing policy
// under a per-worker concurrency cap with a bounded FIFO queue, retries
// failures that are safe to retry, ejects failing workers (passive health),
// and streams bodies, SSE and upgraded connections. Plain HTTP/1.1 runs on
// fasthttp for speed; HTTPS with HTTP/2 (and h2c) runs on net/http, both
// over the same routing, balancing, queue and retry core.
package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// Proxy is the public reverse proxy. Its routing and settings are swapped
// atomically, so requests never take a lock unless they must queue.
type Proxy struct {
	log      hclog.Logger
	settings atomic.Pointer[config.Proxy]
	router   atomic.Pointer[router]
	ids      *requestIDs
	std      http.Handler
	cert     atomic.Pointer[loadedCert]    // reset by SetSettings so a reload rereads the files
	relisten atomic.Pointer[chan struct{}] // closed when listener-level settings change
	buffers  buffers                       // what is held for slow clients
	stalls   stallWatch                    // fasthttp responses whose client may have left
	gate     *connGate                     // proxy.max_connections
	starved  *starvation                   // accepts waiting for file descriptors
	parked   atomic.Int64                  // idle connections waiting outside the engine
	done     chan struct{}                 // closed when Shutdown begins
	pollOnce sync.Once
	poll     atomic.Pointer[poller] // waits for parked connections (Linux); set once by pollerOf

	access    atomic.Bool  // log.access: one line per request (access.go)
	accessLog hclog.Logger // "proxy.access"

	mu        sync.Mutex // guards everything below
	queues    map[string]*queue
	fast      []*fasthttp.Server
	https     []*http.Server
	listeners []net.Listener
	conns     map[net.Conn]struct{} // client connections (*clientConn), closed when Shutdown gives up
	tunnels   map[*tunnel]struct{}
	closing   bool
	streams   sync.WaitGroup // tunnels and h2c connections; Add only while !closing
}

// New returns a proxy with the given settings and no apps (every request
// answers 404 until SetApps).
func New(settings config.Proxy, log hclog.Logger) *Proxy {
	p := &Proxy{
		log:     log.Named("proxy"),
		ids:     newRequestIDs(),
		queues:  map[string]*queue{},
		conns:   map[net.Conn]struct{}{},
		tunnels: map[*tunnel]struct{}{},
		gate:    newConnGate(maxConnectionsOf(settings.MaxConnections)),
		starved: newStarvation(log.Named("proxy")),
		done:    make(chan struct{}),
	}
	p.accessLog = p.log.Named("access")
	p.buffers.log = p.log.Named("buffering")
	p.settings.Store(&settings)
	p.noteListenerSettings(nil, &settings)
	p.router.Store(newRouter(nil))
	p.std = http.HandlerFunc(p.serveStd)
	return p
}

// SetApps publishes a new router built from apps; tables maps app name to
// its source. Safe to call at any time (reload): requests in flight keep
// what they loaded, and the queues of apps that keep their name survive.
func (p *Proxy) SetApps(apps []*config.App, tables map[string]TableSource) {
	p.mu.Lock()
	defer p.mu.Unlock()
	routes := make([]*route, 0, len(apps))
	keep := make(map[string]*queue, len(apps))
	for _, a := range apps {
		src := tables[a.Name]
		if src == nil {
			p.log.Warn("app has no routing table, skipping", "app", a.Name)
			continue
		}
		q := p.queues[a.Name]
		if q == nil {
			q = &queue{}
		}
		keep[a.Name] = q
		rt := &route{
			name:   a.Name,
			spec:   a,
			src:    src,
			sel:    newSelector(a.Balance),
			queue:  q,
			prefix: a.PathPrefix,
			strip:  a.StripPrefix,
		}
		if a.Balance == config.BalanceCookie {
			rt.cookieName = a.StickyCookie
			if rt.cookieName == "" {
				rt.cookieName = "corral_" + a.Name
			}
		}
		routes = append(routes, rt)
	}
	p.queues = keep
	p.router.Store(newRouter(routes))
	for _, rt := range routes {
		rt.queue.rt.Store(rt)
		// A reload may raise caps or add backends: let waiters through.
		rt.queue.handoff()
	}
}

// SetSettings applies proxy settings in place. Request-level settings
// (timeouts, body limit, trusted proxies, request id) apply to the next
// request, worker-pool ones (response_header_timeout, worker_idle_timeout)
// to the next request of running workers, the TLS certificate files are
// read again for the next handshake, and listener-level ones (header size,
// header, read, write and idle timeouts, h2c) to connections accepted
// after the call (a new engine server on the same listener), and the
// connection cap to the next accept.
func (p *Proxy) SetSettings(s config.Proxy) {
	old := p.settings.Swap(&s)
	p.noteListenerSettings(old, &s)
	p.gate.setMax(maxConnectionsOf(s.MaxConnections))
	if cur := p.cert.Load(); cur != nil {
		// Keep serving the loaded certificate until the files are read
		// again on the next handshake (the same paths may hold a renewal).
		p.cert.Store(&loadedCert{cert: cur.cert})
	}
}

// Handler returns the net/http form of the proxy (used by ServeTLS, h2c and tests).
func (p *Proxy) Handler() http.Handler {
	return p.std
}

// Shutdown stops accepting, waits for in-flight requests and streams to
// finish until ctx is done, then closes what remains. It is idempotent.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	if !p.closing {
		close(p.done) // ends accepts waiting for a connection slot
	}
	p.closing = true
	fast := append([]*fasthttp.Server(nil), p.fast...)
	https := append([]*http.Server(nil), p.https...)
	for _, ln := range p.listeners {
		_ = ln.Close()
	}
	parked := p.closeParkedLocked()
	p.mu.Unlock()
	for _, c := range parked {
		_ = c.shut()
	}
	p.stopPoller() // connections that park from now on close instead

	var wg sync.WaitGroup
	errs := make(chan error, len(fast)+len(https))
	for _, s := range fast {
		wg.Go(func() { errs <- s.ShutdownWithContext(ctx) })
	}
	for _, s := range https {
		wg.Go(func() { errs <- s.Shutdown(ctx) })
	}
	streamsDone := make(chan struct{})
	go func() {
		p.streams.Wait()
		close(streamsDone)
	}()
	wg.Wait()
	select {
	case <-streamsDone:
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		p.closeRemaining()
		// Closed streams end at once; the bound only guards against one
		// whose goroutine never started (the engine failed before handing
		// it a hijacked connection).
		select {
		case <-streamsDone:
		case <-time.After(time.Second):
		}
	}
	close(errs)
	for err := range errs {
		// Listeners closed by the caller (a rebind) or above are fine.
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return ctx.Err()
}

// closeRemaining closes client connections and tunnels that outlived the
// shutdown deadline.
func (p *Proxy) closeRemaining() {
	// Closed outside the lock: a closing connection leaves p.conns.
	p.mu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	tunnels := make([]*tunnel, 0, len(p.tunnels))
	for t := range p.tunnels {
		tunnels = append(tunnels, t)
	}
	https := append([]*http.Server(nil), p.https...)
	p.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	for _, t := range tunnels {
		t.close()
	}
	for _, s := range https {
		_ = s.Close()
	}
}

// trackConn returns the ConnState hook of fasthttp server s: it tells a
// client connection which server serves it and when it is idle (parking).
// Connections are registered in p.conns when accepted and leave it when
// closed (see clientConn).
func (p *Proxy) trackConn(s *fasthttp.Server) func(net.Conn, fasthttp.ConnState) {
	return func(c net.Conn, state fasthttp.ConnState) { noteFastState(s, c, state) }
}

// NewUpstream makes the engine's connection pool for one backend.
func (p *Proxy) NewUpstream(addr string, spec *config.App) pool.Upstream {
	return newUpstream(p, addr, spec)
}
