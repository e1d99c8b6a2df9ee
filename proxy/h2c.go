package proxy

import (
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// h2cListener sits in front of the fasthttp server when h2c is enabled. It
// peeks at each new connection: those opening with the HTTP/2 preface
// ("PRI * HTTP/2.0") go to an HTTP/2 server over the net/http handler, the
// rest go on to fasthttp with the peeked bytes put back.
type h2cListener struct {
	net.Listener
	p     *Proxy
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	err   error
	h2    *http2.Server
	base  *http.Server
}

func newH2CListener(ln net.Listener, p *Proxy) *h2cListener {
	l := &h2cListener{
		Listener: ln,
		p:        p,
		conns:    make(chan net.Conn),
		done:     make(chan struct{}),
		h2:       &http2.Server{IdleTimeout: p.settings.Load().IdleTimeout},
		base:     &http.Server{Handler: p.std},
	}
	// Registers graceful GOAWAY on base.Shutdown for connections served
	// through h2.ServeConn with base as their BaseConfig.
	_ = http2.ConfigureServer(l.base, l.h2)
	p.mu.Lock()
	p.https = append(p.https, l.base)
	p.mu.Unlock()
	go l.acceptLoop()
	return l
}

func (l *h2cListener) acceptLoop() {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			l.err = err
			l.once.Do(func() { close(l.done) })
			return
		}
		go l.sniff(c)
	}
}

// sniff reads the first three bytes: "PRI" starts only the HTTP/2 preface,
// and every HTTP/1 request line is longer, so the read never waits for
// bytes an HTTP/1 client will not send.
func (l *h2cListener) sniff(c net.Conn) {
	timeout := l.p.settings.Load().ReadHeaderTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var b [3]byte
	n, err := io.ReadFull(c, b[:])
	_ = c.SetReadDeadline(time.Time{})
	if err != nil && n == 0 {
		_ = c.Close()
		return
	}
	pc := &prefixConn{Conn: c, prefix: append([]byte(nil), b[:n]...)}
	if string(b[:n]) == "PRI" {
		l.serveH2(pc)
		return
	}
	select {
	case l.conns <- pc:
	case <-l.done:
		_ = c.Close()
	}
}

// serveH2 serves one prior-knowledge h2c connection until it ends.
func (l *h2cListener) serveH2(c net.Conn) {
	p := l.p
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.conns[c] = struct{}{}
	p.streams.Add(1)
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		p.streams.Done()
	}()
	l.h2.ServeConn(c, &http2.ServeConnOpts{BaseConfig: l.base, Handler: p.std})
	_ = c.Close()
}

// Accept returns the next HTTP/1 connection.
func (l *h2cListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// Close closes the underlying listener; Accept then returns its error.
func (l *h2cListener) Close() error {
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
