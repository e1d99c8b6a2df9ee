//go:build unix

package proxy

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the client closed (or reset) c, by peeking at
// the socket without consuming bytes a pipelining client may have sent.
//
// Bytes may wait while the client is gone: a reset leaves what arrived
// before it queued, and a TLS client that leaves sends close_notify before
// its FIN (under TLS 1.3 that alert looks like any record). With bytes
// waiting, the socket's state decides (gotBytesThenLeft).
func peerClosed(c net.Conn) bool {
	overTLS := false
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c, overTLS = tc.NetConn(), true
	}
	rc, ok := rawConnOf(c)
	if !ok {
		return false
	}
	closed := false
	_ = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil && n == 0:
			closed = true
		case err == nil:
			closed = gotBytesThenLeft(int(fd), overTLS)
		case err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR):
			closed = true
		}
		return true
	})
	return closed
}
