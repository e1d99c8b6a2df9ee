//go:build unix

package proxy

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// canPark is true where waitReadable can wait without consuming bytes.
const canPark = true

// waitReadable waits, under c's read deadline, until c has bytes to read,
// without reading them; it reports false on the deadline, an error, or the
// peer's close.
//
// The socket is peeked before each wait: bytes that arrived before the
// wait began raise no new readiness event, so waiting first would miss a
// request the client sent at once.
func waitReadable(c net.Conn) bool {
	rc, ok := rawConnOf(c)
	if !ok {
		return false
	}
	readable := false
	err := rc.Read(func(fd uintptr) bool {
		var b [1]byte
		for {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false // wait for readiness, then peek again
			}
			readable = err == nil && n > 0
			return true
		}
	})
	return err == nil && readable
}

// fileLimit returns the soft limit on open files (Go raises it to the hard
// limit at start).
func fileLimit() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return r.Cur, true
}

// rawConnOf returns the socket under c, when c has one.
func rawConnOf(c net.Conn) (syscall.RawConn, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}
