//go:build linux

package proxy

import (
	"errors"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// poller waits for the next request of every parked connection with one
// goroutine in epoll_wait, so a parked connection costs no goroutine.
// Level-triggered one-shot registrations report bytes that arrived before
// the registration too. It is the proxy's, stopped by Shutdown.
type poller struct {
	p      *Proxy
	epfd   int
	wakefd int // an eventfd: a write ends the loop
	mu     sync.Mutex
	conns  map[int]*clientConn // by descriptor; the map owns the registration
	closed bool
}

func newPoller(p *Proxy) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wakefd)
		return nil, err
	}
	pl := &poller{p: p, epfd: epfd, wakefd: wakefd, conns: map[int]*clientConn{}}
	go pl.loop()
	return pl, nil
}

// pollerOf starts the proxy's poller at the first park; nil when epoll is
// not available (parked connections then wait with a goroutine each).
func (p *Proxy) pollerOf() *poller {
	p.pollOnce.Do(func() {
		pl, err := newPoller(p)
		if err != nil {
			p.log.Warn("idle connections wait with a goroutine each: no epoll", "error", err)
			return
		}
		p.poll.Store(pl)
	})
	return p.poll.Load()
}

// pollPark registers a parked connection with the poller; false means the
// caller waits for it another way.
func (p *Proxy) pollPark(c *clientConn, s *fasthttp.Server) bool {
	pl := p.pollerOf()
	if pl == nil {
		return false
	}
	rc, ok := rawConnOf(c.Conn)
	if !ok {
		return false
	}
	added := false
	// Inside Control the descriptor cannot be closed (nor its number reused).
	if rc.Control(func(fd uintptr) { added = pl.add(c, s, int(fd)) }) != nil {
		return false
	}
	return added
}

func (pl *poller) add(c *clientConn, s *fasthttp.Server, fd int) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed || c.state.Load() != connParked {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return false
	}
	c.fd = fd
	pl.conns[fd] = c
	c.polled.Store(true)
	if idle := idleTimeoutOf(s); idle > 0 {
		c.expiry = time.AfterFunc(idle, func() {
			if pl.take(c) {
				c.wake(s, false)
			}
		})
	}
	return true
}

// take removes c from the poller; it reports whether c was there.
func (pl *poller) take(c *clientConn) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.takeLocked(c)
}

func (pl *poller) takeLocked(c *clientConn) bool {
	if !c.polled.Load() || pl.conns[c.fd] != c {
		return false
	}
	delete(pl.conns, c.fd)
	_ = unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	c.polled.Store(false)
	if c.expiry != nil {
		c.expiry.Stop()
		c.expiry = nil
	}
	return true
}

// unpoll removes a closing connection from the poller.
func (p *Proxy) unpoll(c *clientConn) {
	if pl := p.poll.Load(); pl != nil && c.polled.Load() {
		pl.take(c)
	}
}

// stopPoller ends the poller's loop (at Shutdown, after the parked
// connections are closed).
func (p *Proxy) stopPoller() {
	p.pollOnce.Do(func() {}) // no poller starts after this
	pl := p.poll.Load()
	if pl == nil {
		return
	}
	pl.mu.Lock()
	if !pl.closed {
		pl.closed = true
		var one [8]byte
		one[0] = 1 // any nonzero native-endian uint64 wakes the loop
		_, _ = unix.Write(pl.wakefd, one[:])
	}
	pl.mu.Unlock()
}

func (pl *poller) loop() {
	defer func() {
		pl.mu.Lock()
		for _, c := range pl.conns {
			pl.takeLocked(c)
		}
		_ = unix.Close(pl.epfd)
		_ = unix.Close(pl.wakefd)
		pl.mu.Unlock()
	}()
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(pl.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			pl.p.log.Error("waiting for idle connections failed", "error", err)
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == pl.wakefd {
				return
			}
			pl.ready(int(ev.Fd))
		}
	}
}

// ready handles an event on fd: bytes are waiting (back to the engine),
// the peer closed (close), or nothing (a stale event: wait again).
func (pl *poller) ready(fd int) {
	pl.mu.Lock()
	c := pl.conns[fd]
	if c == nil {
		pl.mu.Unlock()
		return
	}
	// The descriptor is open while it is in the map (shut takes it out
	// before closing it).
	var b [1]byte
	var n int
	var err error
	for {
		n, _, err = unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if errors.Is(err, unix.EAGAIN) {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
		if unix.EpollCtl(pl.epfd, unix.EPOLL_CTL_MOD, fd, &ev) == nil {
			pl.mu.Unlock()
			return
		}
	}
	pl.takeLocked(c)
	pl.mu.Unlock()
	s := c.server.Load()
	if err == nil && n > 0 {
		go c.wake(s, true)
		return
	}
	c.wake(s, false)
}

// gotBytesThenLeft reports, for TCP socket fd with bytes waiting, whether
// its peer is gone: it reset the connection (CLOSE), or it is a TLS client
// and sent its FIN (CLOSE_WAIT; its close_notify is the bytes). A plain
// HTTP/1.1 client may half-close after its request and still read.
func gotBytesThenLeft(fd int, overTLS bool) bool {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false
	}
	// The kernel's TCP_CLOSE (7) and TCP_CLOSE_WAIT (8).
	return info.State == unix.BPF_TCP_CLOSE || (overTLS && info.State == unix.BPF_TCP_CLOSE_WAIT)
}
