package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// notifySocket is the datagram socket a test binds in systemd's place.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
	msgs chan string
	seen []string
}

func listenNotify(t *testing.T, name string) *notifySocket {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{t: t, conn: conn, msgs: make(chan string, 1024)}
	go func() {
		defer close(s.msgs)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			s.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return s
}

// await returns the first message from now on that holds want.
func (s *notifySocket) await(want string, timeout time.Duration) string {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-s.msgs:
			s.seen = append(s.seen, m)
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			s.t.Fatalf("no notification with %q within %s; got %q", want, timeout, s.seen)
			return ""
		}
	}
}

// TestSystemdNotify runs corral as systemd would, with NOTIFY_SOCKET and
// WATCHDOG_USEC, and reads what it sends: READY=1 once the app is ready,
// keep-alives, RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a
// reload, STOPPING=1 at shutdown. The workers do not inherit the variables.
func TestSystemdNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "ntf") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := listenNotify(t, filepath.Join(dir, "notify"))

	c := prepareCorral(t)
	c.env = []string{"NOTIFY_SOCKET=" + filepath.Join(dir, "notify"), "WATCHDOG_USEC=300000"}
	c.writeConfig(webApp(2, "one", ""))
	c.start()

	first := sock.await("STATUS=", 10*time.Second)
	if !strings.Contains(first, "STATUS=waiting for a ready worker: web") || strings.Contains(first, "READY=1") {
		t.Errorf("first notification %q, want a STATUS naming web, before READY=1", first)
	}
	sock.await("READY=1", 30*time.Second)
	if code, _ := c.adminCall("GET", "/readyz", "", ""); code != 200 {
		t.Errorf("READY=1 sent while /readyz = %d", code)
	}
	start := time.Now()
	sock.await("WATCHDOG=1", 2*time.Second)
	sock.await("WATCHDOG=1", 2*time.Second)
	if d := time.Since(start); d > time.Second {
		t.Errorf("two keep-alives took %s with WATCHDOG_USEC=300000 (every 150ms)", d)
	}

	for _, name := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC"} {
		resp, err := http.Get("http://" + c.public + "/env?name=" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) != "false" {
			t.Errorf("a worker inherited %s: %q", name, body)
		}
	}

	c.signal(syscall.SIGHUP)
	reloading := sock.await("RELOADING=1", 10*time.Second)
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		t.Fatal(err)
	}
	usec := monotonicField(t, reloading)
	if nowUsec := now.Nano() / 1e3; usec <= 0 || usec > nowUsec || nowUsec-usec > 10e6 {
		t.Errorf("RELOADING=1 carries MONOTONIC_USEC=%d, want CLOCK_MONOTONIC of the moment (now %d)", usec, nowUsec)
	}
	if ready := sock.await("READY=1", 10*time.Second); !strings.Contains(ready, "STATUS=config reloaded") {
		t.Errorf("after the reload: %q, want READY=1 with its outcome", ready)
	}

	c.signal(syscall.SIGTERM)
	sock.await("STOPPING=1", 10*time.Second)
	if code := c.wait(20 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
}

func monotonicField(t *testing.T, msg string) int64 {
	t.Helper()
	for _, line := range strings.Split(msg, "\n") {
		if v, ok := strings.CutPrefix(line, "MONOTONIC_USEC="); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("MONOTONIC_USEC=%q", v)
			}
			return n
		}
	}
	t.Fatalf("no MONOTONIC_USEC in %q", msg)
	return 0
}

// TestNotifierAbstractSocketAndWatchdog checks the notifier in-process: an
// abstract socket name ("@...") works, WATCHDOG_PID for another process
// turns the watchdog off, and no keep-alive goes out while corral is not
// alive.
func TestNotifierAbstractSocketAndWatchdog(t *testing.T) {
	name := fmt.Sprintf("@corral-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	sock := listenNotify(t, name)
	log := hclog.NewNullLogger()

	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n, watchdog := newNotifier(log)
	if n == nil || watchdog != 2*time.Second {
		t.Fatalf("newNotifier = %v, %s; want a notifier and 2s", n, watchdog)
	}
	defer n.close()
	for _, k := range notifyEnv {
		if _, ok := os.LookupEnv(k); ok {
			t.Errorf("%s is still in the environment the workers inherit", k)
		}
	}

	ctx := context.Background()
	n.watchdogOnce(ctx, time.Second, func(context.Context) error { return errors.New("app web: supervisor does not answer") })
	n.watchdogOnce(ctx, time.Second, func(context.Context) error { return nil })
	if m := sock.await("WATCHDOG=1", 5*time.Second); len(sock.seen) != 1 {
		t.Errorf("notifications %q, want only the keep-alive of the alive round (%q)", sock.seen, m)
	}

	// Nothing about reloads before the first READY=1.
	n.reloading()
	n.stopping()
	if m := sock.await("STOPPING=1", 5*time.Second); strings.Contains(strings.Join(sock.seen, "|"), "RELOADING") {
		t.Errorf("RELOADING=1 sent before READY=1: %q (%q)", sock.seen, m)
	}

	t.Setenv("NOTIFY_SOCKET", name)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "1")
	other, watchdog := newNotifier(log)
	defer other.close()
	if other == nil || watchdog != 0 {
		t.Errorf("WATCHDOG_PID of another process: watchdog %s, want none", watchdog)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if none, _ := newNotifier(log); none != nil {
		t.Error("a notifier without NOTIFY_SOCKET")
	}
}
