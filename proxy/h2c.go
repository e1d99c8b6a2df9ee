package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// splitListener sits in front of an HTTP/1.1 server and takes the HTTP/2
// connections out of its way: classify looks at each new connection (the
// h2c preface, or TLS's ALPN) and HTTP/2 ones are served here through the
// net/http handler, behind h2Filter; the rest go on to the HTTP/1.1 server
// through Accept.
type splitListener struct {
	net.Listener
	p        *Proxy
	classify func(net.Conn) (c net.Conn, h2 bool, err error)
	conns    chan net.Conn
	done     chan struct{}
	once     sync.Once
	err      error
	// pending counts connections being classified or handed to Accept:
	// the accept side stays open until they are through, so a listener
	// that ends (a new generation) drops none of them.
	pending sync.WaitGroup
	h2      *http2.Server
	base    *http.Server
}

// maxFrameSize is the largest HTTP/2 frame corral reads (the protocol's
// minimum, what HAProxy and nginx use): larger frames are a FRAME_SIZE_ERROR.
const maxFrameSize = 16 << 10

func newSplitListener(ln net.Listener, p *Proxy, base *http.Server, classify func(net.Conn) (net.Conn, bool, error)) *splitListener {
	l := &splitListener{
		Listener: ln,
		p:        p,
		classify: classify,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		h2:       &http2.Server{IdleTimeout: p.settings.Load().IdleTimeout, MaxReadFrameSize: maxFrameSize},
		base:     base,
	}
	// Registers graceful GOAWAY on base.Shutdown for connections served
	// through h2.ServeConn with base as their BaseConfig.
	_ = http2.ConfigureServer(l.base, l.h2)
	go l.acceptLoop()
	return l
}

// newH2CListener splits prior-knowledge h2c connections from HTTP/1.1 ones.
// The caller holds p.mu.
func newH2CListener(ln net.Listener, p *Proxy) *splitListener {
	base := &http.Server{Handler: p.std}
	p.https = append(p.https, base)
	return newSplitListener(ln, p, base, p.sniffH2C)
}

func (l *splitListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.pending.Wait()
			l.err = err
			l.once.Do(func() { close(l.done) })
			return
		}
		l.pending.Add(1)
		go l.route(c)
	}
}

// route classifies one connection and serves it, or hands it to Accept.
func (l *splitListener) route(c net.Conn) {
	c, h2, err := l.classify(c)
	if err != nil {
		l.pending.Done()
		_ = c.Close()
		return
	}
	if h2 {
		l.pending.Done()
		l.serveH2(c)
		return
	}
	defer l.pending.Done()
	select {
	case l.conns <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// sniffH2C reads the first three bytes: "PRI" starts only the HTTP/2
// preface, and every HTTP/1 request line is longer, so the read never
// waits for bytes an HTTP/1 client will not send.
func (p *Proxy) sniffH2C(c net.Conn) (net.Conn, bool, error) {
	_ = c.SetReadDeadline(time.Now().Add(p.headerTimeout()))
	var b [3]byte
	n, err := io.ReadFull(c, b[:])
	_ = c.SetReadDeadline(time.Time{})
	if err != nil && n == 0 {
		return c, false, err
	}
	return &prefixConn{Conn: c, prefix: append([]byte(nil), b[:n]...)}, string(b[:n]) == "PRI", nil
}

// headerTimeout bounds the wait for a new connection's first bytes.
func (p *Proxy) headerTimeout() time.Duration {
	if d := p.settings.Load().ReadHeaderTimeout; d > 0 {
		return d
	}
	return 10 * time.Second
}

// serveH2 serves one HTTP/2 connection until it ends.
func (l *splitListener) serveH2(c net.Conn) {
	p := l.p
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.streams.Add(1) // the connection itself is in p.conns since its accept
	p.mu.Unlock()
	defer p.streams.Done()
	l.h2.ServeConn(filterH2(c, p.settings.Load().MaxHeaderBytes), &http2.ServeConnOpts{Context: context.Background(), BaseConfig: l.base, Handler: p.std})
	_ = c.Close()
}

// Accept returns the next HTTP/1 connection.
func (l *splitListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close closes the underlying listener; Accept then returns its error.
func (l *splitListener) Close() error {
	return l.Listener.Close()
}

// prefixConn replays bytes read while sniffing before reading on.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// SyscallConn exposes the socket so a queued request can check whether
// its client left.
func (c *prefixConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

var errMalformedH2 = errors.New("malformed http/2 request")
