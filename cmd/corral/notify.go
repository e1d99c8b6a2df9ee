package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/admin"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): one datagram
// per state change to the unix socket named by $NOTIFY_SOCKET. It is the
// dozen lines go-systemd's daemon package would give, written here so
// corral needs no module for them. A nil *notifier (not under systemd)
// sends nothing.
type notifier struct {
	log  hclog.Logger
	conn *net.UnixConn

	mu    sync.Mutex // one datagram at a time, in order
	ready atomic.Bool
}

// notifyEnv are the variables systemd sets for corral alone; they are
// removed from corral's environment so the workers do not inherit them
// (an app that speaks the protocol itself would otherwise report for
// corral).
var notifyEnv = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

// newNotifier connects to $NOTIFY_SOCKET (a path, or "@name" for an
// abstract socket) and reads the watchdog interval; it returns a nil
// notifier when the variable is unset, and a zero interval when no
// watchdog is asked for (or it is for another process).
func newNotifier(log hclog.Logger) (*notifier, time.Duration) {
	socket := os.Getenv("NOTIFY_SOCKET")
	usec, pid := os.Getenv("WATCHDOG_USEC"), os.Getenv("WATCHDOG_PID")
	for _, k := range notifyEnv {
		os.Unsetenv(k)
	}
	if socket == "" {
		return nil, 0
	}
	log = log.Named("systemd")
	// Go's net package turns a leading "@" into the abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		log.Warn("cannot reach NOTIFY_SOCKET; not sending notifications", "socket", socket, "error", err)
		return nil, 0
	}
	n := &notifier{log: log, conn: conn}
	var watchdog time.Duration
	if us, err := strconv.ParseInt(usec, 10, 64); err == nil && us > 0 && (pid == "" || pid == strconv.Itoa(os.Getpid())) {
		watchdog = time.Duration(us) * time.Microsecond
	} else if usec != "" {
		log.Warn("ignoring WATCHDOG_USEC", "watchdog_usec", usec, "watchdog_pid", pid)
	}
	return n, watchdog
}

// send sends one notification (newline-separated assignments).
func (n *notifier) send(state string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.conn.Write([]byte(state)); err != nil {
		n.log.Warn("notifying systemd", "state", strings.ReplaceAll(state, "\n", " "), "error", err)
	}
}

// close closes the socket once the last notification is sent.
func (n *notifier) close() {
	if n != nil {
		n.conn.Close()
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which RELOADING=1
// carries: systemd 253 and later (Type=notify-reload) use it to tell this
// reload from an earlier one.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1e3
}

// reloading says a reload has begun. Before corral was first ready there
// is nothing to say: READY=1 has not been sent, and a READY=1 after the
// reload would say it too early.
func (n *notifier) reloading() {
	if n == nil || !n.ready.Load() {
		return
	}
	n.send(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading the config", monotonicUsec()))
}

// reloaded says the reload that reloading announced is over, applied or not.
func (n *notifier) reloaded(res admin.ReloadResult) {
	if n == nil || !n.ready.Load() {
		return
	}
	status := "config reloaded: " + res.Changes
	if !res.Applied {
		status = "config rejected; serving the previous one"
	}
	n.send("READY=1\nSTATUS=" + status)
}

// stopping says corral is shutting down.
func (n *notifier) stopping() {
	n.send("STOPPING=1\nSTATUS=shutting down")
}

// readyInterval is how often waitReady looks at the apps.
const readyInterval = 50 * time.Millisecond

// waitReady sends READY=1 once every app has a ready worker (as /readyz
// has it), and STATUS= lines naming the apps waited for until then. It
// ends at that, or with ctx.
func (n *notifier) waitReady(ctx context.Context, status func() admin.Status) {
	if n == nil {
		return
	}
	tick := time.NewTicker(readyInterval)
	defer tick.Stop()
	last := ""
	for {
		unready := admin.UnreadyApps(status())
		if len(unready) == 0 {
			n.ready.Store(true)
			n.send("READY=1\nSTATUS=serving")
			return
		}
		if s := "waiting for a ready worker: " + strings.Join(unready, ", "); s != last {
			n.send("STATUS=" + s)
			last = s
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// runWatchdog sends WATCHDOG=1 every interval/2 (sd_watchdog_enabled(3)
// asks for at most half the timeout) for as long as alive says the reload
// goroutine and every app's supervisor answer, the same heartbeat as
// /healthz. When one is wedged, the keep-alives stop and systemd restarts
// corral once the timeout passes.
func (n *notifier) runWatchdog(ctx context.Context, interval time.Duration, alive func(context.Context) error) {
	if n == nil || interval <= 0 {
		return
	}
	every := interval / 2
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		n.watchdogOnce(ctx, min(every, time.Second), alive)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// watchdogOnce is one round of runWatchdog: a keep-alive if alive answers
// nil within bound.
func (n *notifier) watchdogOnce(ctx context.Context, bound time.Duration, alive func(context.Context) error) {
	actx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if err := alive(actx); err != nil {
		n.log.Warn("not sending the watchdog keep-alive: corral is not alive", "error", err)
		return
	}
	n.send("WATCHDOG=1")
}
