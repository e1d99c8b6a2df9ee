package proxy

import (
	"bufio"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/corral-dev/corral/pool"
)

// tunnel is an upgraded connection (WebSocket or other protocol) passed
// through between a client and a worker. It holds the worker's in-flight
// slot while it lives, so draining waits for it, and Shutdown can close it.
type tunnel struct {
	mu      sync.Mutex
	client  io.Closer
	backend net.Conn
	closed  bool
}

// setClient records the client side; it reports false when the tunnel was
// closed meanwhile (and closes c).
func (t *tunnel) setClient(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = c.Close()
		return false
	}
	t.client = c
	return true
}

// close closes both sides; it is safe to call more than once.
func (t *tunnel) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.client != nil {
		_ = t.client.Close()
	}
	_ = t.backend.Close()
}

// openTunnel registers a tunnel so Shutdown waits for it; it reports false
// once Shutdown has begun.
func (p *Proxy) openTunnel(t *tunnel) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.tunnels[t] = struct{}{}
	p.streams.Add(1)
	return true
}

func (p *Proxy) closeTunnel(t *tunnel) {
	t.close()
	p.mu.Lock()
	delete(p.tunnels, t)
	p.mu.Unlock()
	p.streams.Done()
}

// pipe copies both ways until either side ends, then closes both.
func pipe(t *tunnel, client io.ReadWriter, backend io.ReadWriter) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(backend, client)
		t.close()
	}()
	_, _ = io.Copy(client, backend)
	t.close()
	<-done
}

// tunnelFast passes an upgrade request through: it sends the request head
// to a worker on a fresh connection, then hijacks the client connection
// and copies raw bytes both ways (the worker's 101 answer included).
func (p *Proxy) tunnelFast(ctx *fasthttp.RequestCtx, rt *route, t *pool.Table, c *fastCall) {
	r := &c.req
	r.now = time.Now().UnixNano()
	r.max = int64(t.App.MaxInflight)
	b, err := acquire(rt, t, r, clientWatch{conn: ctx.Conn()})
	if err != nil {
		writeFastError(ctx, err.(*Error))
		return
	}
	st := p.settings.Load()
	bc, err := net.DialTimeout("tcp", b.Addr, st.DialTimeout)
	if err != nil {
		p.upgradeFailed(rt, t, b, ctx.Time(), &dialError{err: err})
		writeFastError(ctx, ErrBadGateway)
		return
	}
	bw := bufio.NewWriter(bc)
	if err = ctx.Request.Header.Write(bw); err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = bc.Close()
		p.upgradeFailed(rt, t, b, ctx.Time(), err)
		writeFastError(ctx, ErrBadGateway)
		return
	}
	tn := &tunnel{backend: bc}
	if !p.openTunnel(tn) {
		_ = bc.Close()
		release(rt, b)
		writeFastError(ctx, ErrNoBackend)
		return
	}
	start := ctx.Time()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(cc net.Conn) {
		defer func() {
			p.closeTunnel(tn)
			b.Stats.Observe(fasthttp.StatusSwitchingProtocols, time.Since(start))
			release(rt, b)
		}()
		if tn.setClient(cc) {
			pipe(tn, cc, bc)
		}
	})
}

// upgradeFailed accounts for an upgrade that could not reach its worker.
func (p *Proxy) upgradeFailed(rt *route, t *pool.Table, b *pool.Backend, start time.Time, err error) {
	release(rt, b)
	passiveFailure(p.log, t, b, time.Now(), failureReason(err))
	b.Stats.Observe(502, time.Since(start))
	b.Stats.Errors.Add(1)
	p.log.Debug("upgrade failed", "app", rt.name, "worker", b.ID, "error", err)
}
