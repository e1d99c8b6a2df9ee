package proxy

import (
	"net"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenAcceptsWithoutTCPKeepAlive: Listen's connections carry no
// SO_KEEPALIVE, where net.Listen's do (the Go behaviour it avoids).
func TestListenAcceptsWithoutTCPKeepAlive(t *testing.T) {
	keepAlive := func(ln net.Listener) int {
		t.Helper()
		defer ln.Close()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		rc, err := s.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		v := -1
		_ = rc.Control(func(fd uintptr) { v, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) })
		return v
	}
	std, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if v := keepAlive(std); v != 1 {
		t.Errorf("net.Listen's accepted connection: SO_KEEPALIVE %d, expected Go's default 1", v)
	}
	ours, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if v := keepAlive(ours); v != 0 {
		t.Errorf("Listen's accepted connection: SO_KEEPALIVE %d, want 0", v)
	}
}
