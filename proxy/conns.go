package proxy

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Client connections of the public listeners are wrapped when accepted:
// the wrapper counts them against proxy.max_connections, keeps them in
// p.conns for Shutdown, and lets an idle HTTP/1.1 connection of the
// fasthttp engine wait without the engine's per-connection memory.
//
// Why: with StreamRequestBody (which corral needs) fasthttp keeps a
// connection's read buffer (max_header_bytes), its RequestCtx and its
// goroutine while a keep-alive connection waits for its next request,
// about 24 kB per idle connection. Parking ends the engine's loop on an
// idle connection whose read buffer is empty, so the engine returns its
// buffers and context to its pools, and waits for the next byte in the
// proxy's epoll poller (Linux, conns_linux.go) or in a small goroutine
// (waitParked); then the connection is handed back to the engine server
// that accepted it (fasthttp.Server.ServeConn).
//
// How the engine's loop is ended: fasthttp calls ConnState(StateIdle) just
// before it peeks at the next request's first byte, and its bufio reader
// only calls the connection's Read when its buffer is empty, so the first
// Read after StateIdle means "idle, nothing buffered" (pipelined requests
// already read stay in the buffer and never reach Read). When no byte comes
// within parkAfter, that Read answers io.EOF: the engine ends the
// connection cleanly and closes it, and Close parks it instead.

// Connection states.
const (
	connServing int32 = iota // an engine owns it
	connParked               // waiting for its next request
	connClosed
)

// clientConn is one accepted client connection.
type clientConn struct {
	net.Conn
	p *Proxy
	// server is the fasthttp server serving it (nil on the net/http
	// engine): the one that accepted it, for its whole life.
	server atomic.Pointer[fasthttp.Server]
	// idle is set at the engine's StateIdle and cleared at StateActive:
	// the next Read is the peek at the next request, with nothing buffered.
	idle atomic.Bool
	// parkNext is set when Read ended the engine's loop, so the engine's
	// Close parks the connection.
	parkNext atomic.Bool
	state    atomic.Int32
	once     sync.Once
	// polled is set while the connection waits in the proxy's poller
	// (Linux), which knows it by descriptor fd; expiry is its idle timer.
	polled atomic.Bool
	fd     int
	expiry *time.Timer
}

// parkAfter is how long an idle connection waits in the engine before it
// parks. A busy keep-alive client sends its next request within it, and
// ending and restarting the engine's loop for every request would cost
// about a third of the throughput (bench/proxy.sh: 0.55 of nginx's req/s
// instead of 0.85); a connection that stays idle longer parks.
const parkAfter = 10 * time.Millisecond

// Read ends an idle engine loop with io.EOF once no byte came within
// parkAfter (see above); otherwise it reads.
func (c *clientConn) Read(b []byte) (int, error) {
	if !c.idle.Swap(false) {
		return c.Conn.Read(b)
	}
	// The engine set its idle deadline just before this read; on a byte it
	// sets the request's own (or clears it when it has none), so the
	// shorter one here lasts only until then.
	s := c.server.Load()
	if s == nil || c.Conn.SetReadDeadline(time.Now().Add(parkAfter)) != nil {
		return c.Conn.Read(b)
	}
	n, err := c.Conn.Read(b)
	if n == 0 && isTimeout(err) {
		c.parkNext.Store(true)
		return 0, io.EOF
	}
	if n > 0 && s.ReadTimeout == 0 && s.IdleTimeout == 0 {
		_ = c.Conn.SetReadDeadline(time.Time{}) // the engine sets none then
	}
	return n, err
}

// Close parks the connection when the engine closes it after an idle end
// of its loop, and closes it otherwise. It is safe to call more than once.
func (c *clientConn) Close() error {
	if c.parkNext.Swap(false) && c.park() {
		return nil
	}
	return c.shut()
}

// SyscallConn exposes the socket (peerClosed, parking).
func (c *clientConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// shut closes the socket and gives back its slot, once.
func (c *clientConn) shut() error {
	var err error
	c.once.Do(func() {
		if c.state.Swap(connClosed) == connParked {
			c.p.parked.Add(-1)
		}
		c.p.unpoll(c) // before the close: the descriptor's number may be reused at once
		err = c.Conn.Close()
		c.p.forgetConn(c)
	})
	return err
}

// park makes the connection wait for its next request outside the
// engine; it reports false when the connection must close instead.
func (c *clientConn) park() bool {
	s := c.server.Load()
	if s == nil {
		return false
	}
	p := c.p
	p.mu.Lock()
	if p.closing || !c.state.CompareAndSwap(connServing, connParked) {
		p.mu.Unlock()
		return false
	}
	p.parked.Add(1)
	p.mu.Unlock()
	if !p.pollPark(c, s) {
		go c.waitParked(s)
	}
	return true
}

// waitParked waits for the next request's first byte under the engine's
// idle timeout, then hands the connection back to the engine.
func (c *clientConn) waitParked(s *fasthttp.Server) {
	var deadline time.Time
	if idle := idleTimeoutOf(s); idle > 0 {
		deadline = time.Now().Add(idle)
	}
	ready := c.Conn.SetReadDeadline(deadline) == nil && waitReadable(c.Conn)
	c.wake(s, ready)
}

// idleTimeoutOf is the idle timeout of fasthttp server s.
func idleTimeoutOf(s *fasthttp.Server) time.Duration {
	if s.IdleTimeout != 0 {
		return s.IdleTimeout
	}
	return s.ReadTimeout // fasthttp's idle timeout falls back to it too
}

// wake ends a park: with ready (the next request's bytes are there) the
// connection goes back to the engine, else it closes.
func (c *clientConn) wake(s *fasthttp.Server, ready bool) {
	p := c.p
	resumed := false
	p.mu.Lock()
	// Whoever moves the state off connParked first (this wait, shut,
	// Shutdown) takes the connection out of the parked count.
	if c.state.CompareAndSwap(connParked, connServing) {
		p.parked.Add(-1)
		if ready && !p.closing {
			resumed = true
			p.streams.Add(1) // Shutdown waits for the request that woke it
		}
	}
	p.mu.Unlock()
	if !resumed {
		_ = c.shut()
		return
	}
	defer p.streams.Done()
	// The engine sets its own deadlines; the park's must not outlive it,
	// nor a write deadline left from the last response.
	if c.Conn.SetDeadline(time.Time{}) != nil {
		_ = c.shut()
		return
	}
	// ServeConn counts the connection in the server's open connections
	// (Shutdown waits for it), applies its header timeout and starts
	// ConnRequestNum at 1 again (fastError's first-request check on the
	// h2c listener looks for a *prefixConn, which a resumed connection no
	// longer is). It closes c when done, which parks it again when idle.
	_ = s.ServeConn(c)
}

// clientConnOf finds the wrapper under what the engine sees: the
// connection itself, or the h2c listener's sniffing wrapper around it.
func clientConnOf(c net.Conn) *clientConn {
	switch v := c.(type) {
	case *clientConn:
		return v
	case *prefixConn:
		cc, _ := v.Conn.(*clientConn)
		return cc
	}
	return nil
}

// noteFastState follows the fasthttp engine's view of a connection: which
// server serves it and when it is idle with nothing buffered.
func noteFastState(s *fasthttp.Server, c net.Conn, state fasthttp.ConnState) {
	cc := clientConnOf(c)
	if cc == nil {
		return
	}
	switch state {
	case fasthttp.StateNew:
		cc.server.Store(s)
	case fasthttp.StateIdle:
		if pc, ok := c.(*prefixConn); ok && len(pc.prefix) > 0 {
			return // sniffed bytes not read yet: the engine's Read is no peek
		}
		cc.idle.Store(canPark)
	case fasthttp.StateActive:
		cc.idle.Store(false)
	}
}

// connGate caps open client connections across the public listeners: an
// accept waits for a free slot, so connections past the cap wait in the
// kernel's backlog.
type connGate struct {
	mu    sync.Mutex
	open  int
	max   int
	freed chan struct{} // closed (and replaced) when a slot frees or max grows
	waits atomic.Uint64 // accepts that had to wait
}

func newConnGate(max int) *connGate {
	return &connGate{max: max, freed: make(chan struct{})}
}

// acquire takes a slot, waiting while the cap is reached; it reports false
// when stop or done closes first.
func (g *connGate) acquire(stop, done <-chan struct{}) bool {
	g.mu.Lock()
	waited := false
	for g.open >= g.max {
		if !waited {
			g.waits.Add(1)
			waited = true
		}
		ch := g.freed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-stop:
			return false
		case <-done:
			return false
		}
		g.mu.Lock()
	}
	g.open++
	g.mu.Unlock()
	return true
}

// release gives a slot back.
func (g *connGate) release() {
	g.mu.Lock()
	g.open--
	g.wakeLocked()
	g.mu.Unlock()
}

// setMax changes the cap for the next accepts; open connections stay.
func (g *connGate) setMax(n int) {
	g.mu.Lock()
	if n > g.max {
		g.wakeLocked()
	}
	g.max = n
	g.mu.Unlock()
}

func (g *connGate) wakeLocked() {
	close(g.freed)
	g.freed = make(chan struct{})
}

func (g *connGate) limit() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.max
}

// fdReserve is the file descriptors the default connection cap leaves for
// everything else: listeners, the admin server, log and config files,
// pipes to workers.
const fdReserve = 256

// maxConnectionsOf returns the connection cap for a setting: the setting
// itself, or, when 0, half of what the file limit leaves after fdReserve
// (a proxied request needs a worker connection too, one descriptor each).
func maxConnectionsOf(setting int) int {
	if setting > 0 {
		return setting
	}
	n, ok := fileLimit()
	if !ok || n > 1<<26 {
		return 1 << 25
	}
	if n < 2*fdReserve {
		return max(int(n)/4, 16)
	}
	return int(n-fdReserve) / 2
}

// ConnStats are the public listeners' client connections now.
type ConnStats struct {
	Open       int    // open client connections (all engines, hijacked ones included)
	Parked     int    // idle HTTP/1.1 connections waiting outside the engine
	Limit      int    // the cap (proxy.max_connections or its default)
	LimitWaits uint64 // accepts that waited for a free slot
	// DescriptorWaits counts accepts that waited because corral was out of
	// file descriptors.
	DescriptorWaits uint64
}

// ConnStats returns the client connection counts (for metrics).
func (p *Proxy) ConnStats() ConnStats {
	p.mu.Lock()
	open := len(p.conns)
	p.mu.Unlock()
	return ConnStats{Open: open, Parked: int(p.parked.Load()), Limit: p.gate.limit(), LimitWaits: p.gate.waits.Load(),
		DescriptorWaits: p.starved.waits.Load()}
}

// acceptConn takes a slot and accepts the next client connection of ln.
// A nil stop never closes. Out of file descriptors, it waits for one
// (starvation.accept).
func (p *Proxy) acceptConn(ln net.Listener, stop <-chan struct{}) (net.Conn, error) {
	if !p.gate.acquire(stop, p.done) {
		return nil, net.ErrClosed
	}
	c, err := p.starved.accept(ln, stop, p.done)
	if err != nil {
		p.gate.release()
		return nil, err
	}
	cc := &clientConn{Conn: c, p: p}
	p.mu.Lock()
	p.conns[cc] = struct{}{}
	p.mu.Unlock()
	return cc, nil
}

// forgetConn drops a closed connection and frees its slot.
func (p *Proxy) forgetConn(c *clientConn) {
	p.mu.Lock()
	if _, ok := p.conns[c]; !ok {
		p.mu.Unlock()
		return
	}
	delete(p.conns, c)
	p.mu.Unlock()
	p.gate.release()
}

// closeParkedLocked takes the connections waiting for a next request out
// of parking, for Shutdown to close (they are idle, like the ones the
// engines close themselves). The caller holds p.mu and has set p.closing.
func (p *Proxy) closeParkedLocked() []*clientConn {
	var out []*clientConn
	for c := range p.conns {
		if cc, ok := c.(*clientConn); ok && cc.state.CompareAndSwap(connParked, connClosed) {
			p.parked.Add(-1)
			out = append(out, cc)
		}
	}
	return out
}
