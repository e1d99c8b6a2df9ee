package proxy

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/config"
)

// Listener-level settings (header size and timeouts, idle timeout, h2c)
// belong to an engine server, fixed when it starts. A reload that changes
// them starts a new server on the same listener for the connections
// accepted from then on; connections already open keep the server that
// accepted them until they end. No connection is closed by it.

// listenerGen is one server generation's view of a shared listener: once
// stale, its Accept reports the listener closed, so that generation's
// serve loop ends while the next one accepts.
type listenerGen struct {
	net.Listener
	p        *Proxy
	stale    atomic.Bool
	stop     chan struct{} // closed when stale: ends a wait for a connection slot
	released chan struct{} // closed once an Accept has seen the generation stale
	once     sync.Once
}

func (l *listenerGen) Accept() (net.Conn, error) {
	if l.stale.Load() {
		l.release()
		return nil, net.ErrClosed
	}
	c, err := l.p.acceptConn(l.Listener, l.stop)
	if err != nil && l.stale.Load() {
		l.release()
		return nil, net.ErrClosed
	}
	return c, err
}

func (l *listenerGen) release() { l.once.Do(func() { close(l.released) }) }

// Close does nothing: the listener outlives each generation (Shutdown and
// the caller close it).
func (l *listenerGen) Close() error { return nil }

// listenerSettings are the settings an engine server is built with.
type listenerSettings struct {
	maxHeader                     int
	header, read, write, idle, wt time.Duration
	h2c                           bool
}

func listenerSettingsOf(s *config.Proxy) listenerSettings {
	return listenerSettings{
		maxHeader: s.MaxHeaderBytes, header: s.ReadHeaderTimeout, read: s.ReadTimeout,
		write: s.WriteTimeout, idle: s.IdleTimeout, h2c: s.H2C,
	}
}

// listenerChanged returns a channel closed at the next change of
// listener-level settings.
func (p *Proxy) listenerChanged() <-chan struct{} {
	return *p.relisten.Load()
}

// noteListenerSettings wakes the serve loops when old and next differ in
// listener-level settings.
func (p *Proxy) noteListenerSettings(old, next *config.Proxy) {
	if old != nil && listenerSettingsOf(old) == listenerSettingsOf(next) {
		return
	}
	ch := make(chan struct{})
	if prev := p.relisten.Swap(&ch); prev != nil {
		close(*prev)
	}
}

// serveGenerations serves ln with a server from start, and with a new one
// each time listener-level settings change. start registers its server
// and returns its serve function, or false once Shutdown has begun.
func (p *Proxy) serveGenerations(ln net.Listener, start func(net.Listener) (func() error, bool)) error {
	waker, canWake := ln.(interface{ SetDeadline(time.Time) error })
	for {
		changed := p.listenerChanged()
		gen := &listenerGen{Listener: ln, p: p, stop: make(chan struct{}), released: make(chan struct{})}
		serve, ok := start(gen)
		if !ok {
			return nil
		}
		done := make(chan error, 1)
		go func() { done <- serve() }()
		select {
		case err := <-done:
			return err
		case <-changed:
		}
		if !canWake {
			p.log.Warn("listener settings apply after a restart: the listener cannot be woken")
			return <-done
		}
		gen.stale.Store(true)
		close(gen.stop)
		_ = waker.SetDeadline(time.Now()) // wakes the Accept of the old generation
		var err error
		select {
		case <-gen.released:
			// The old server serves on what it accepted, and its serve
			// function returns by itself (into done's buffer).
		case err = <-done:
		}
		_ = waker.SetDeadline(time.Time{})
		if p.isClosing() {
			return nil
		}
		if err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		p.log.Debug("listener settings changed: new connections get a new server", "listener", ln.Addr().String())
	}
}

// Listen binds a public (or admin) TCP listener. Its connections get no
// TCP keep-alive: Go's default turns it on for every accepted connection
// with four setsockopt calls, which a new-connection-per-request client
// pays each time, and corral closes idle clients itself (idle_timeout), as
// nginx and HAProxy do by default.
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, KeepAliveConfig: net.KeepAliveConfig{Enable: false}}
	return lc.Listen(context.Background(), "tcp", addr)
}
