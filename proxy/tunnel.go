package proxy

import (
	"io"
	"net"
	"sync"
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

// keepProbing turns TCP keep-alive on (Go's default probes) for a client
// connection that becomes a tunnel. Listen's connections have none: an
// idle HTTP connection ends by idle_timeout. A tunnel has no idle limit
// and holds a worker slot, so a client that vanished without a FIN or RST
// (a phone that lost its network) is only found by the probes.
func keepProbing(c net.Conn) {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn() // TLS
	}
	if cc := clientConnOf(c); cc != nil {
		c = cc.Conn
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
	}
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
