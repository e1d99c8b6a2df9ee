package proxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// When corral runs out of file descriptors, accept fails with EMFILE while
// the connection stays in the kernel's listen backlog. fasthttp's Serve
// ends on such an error ("Permanent error when accepting new
// connections"), which would leave the public port unserved for good, and
// net/http retries with a log line each time (every second). corral's
// listeners wait here instead: the connection is accepted once a
// descriptor is free, and the log says so once a minute at most.

// acceptRetryMax bounds the wait between two accepts while out of
// descriptors: how late a freed descriptor is noticed.
const acceptRetryMax = 100 * time.Millisecond

// starvation is the state of the accepts of one or more listeners that
// found corral out of file descriptors (or kernel memory).
type starvation struct {
	log   hclog.Logger
	waits atomic.Uint64 // accepts that had to wait

	// One line of each kind a minute at most: waiting, accepting again,
	// no descriptor for a worker connection.
	warned, recovered, dialWarned logLimit
}

func newStarvation(log hclog.Logger) *starvation { return &starvation{log: log} }

// outOfResources reports whether an accept error is corral's own shortage,
// not the listener's end.
func outOfResources(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// accept accepts the next connection of ln. Out of descriptors, it retries
// (5 ms, doubling to acceptRetryMax) until one is free; stop or done (nil:
// never) closing ends the wait with net.ErrClosed.
func (s *starvation) accept(ln net.Listener, stop, done <-chan struct{}) (net.Conn, error) {
	var since time.Time
	for wait := time.Duration(0); ; {
		c, err := ln.Accept()
		if err == nil {
			if !since.IsZero() && s.recovered.due() {
				s.log.Info("accepting connections again", "listener", ln.Addr().String(),
					"waited", time.Since(since).Round(time.Millisecond).String())
			}
			return c, nil
		}
		if !outOfResources(err) {
			return nil, err
		}
		if since.IsZero() {
			since = time.Now()
			s.waits.Add(1)
			if s.warned.due() {
				limit, _ := fileLimit()
				s.log.Warn("out of file descriptors: new connections wait in the listen backlog",
					"listener", ln.Addr().String(), "error", err, "file_limit", limit,
					"hint", "raise the file limit (ulimit -n, LimitNOFILE=) or lower proxy.max_connections")
			}
		}
		wait = min(max(2*wait, 5*time.Millisecond), acceptRetryMax)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
			return nil, net.ErrClosed
		case <-done:
			t.Stop()
			return nil, net.ErrClosed
		}
	}
}

// logLimit lets a log line through once a logEvery at most, so a limit
// that flaps at its edge (or a disk that stays full) logs once a minute.
type logLimit struct {
	mu   sync.Mutex
	last time.Time
}

// logEvery is the least time between two log lines of a logLimit.
const logEvery = time.Minute

// due reports whether a line may be logged now, and if so counts it.
func (l *logLimit) due() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && time.Since(l.last) < logEvery {
		return false
	}
	l.last = time.Now()
	return true
}

// PatientListener wraps ln so that its Accept waits while corral is out of
// file descriptors instead of failing (net/http's server would log every
// retry); log gets one line when it begins and one when it ends, once a
// minute at most. Close ends a wait.
func PatientListener(ln net.Listener, log hclog.Logger) net.Listener {
	return &patientListener{Listener: ln, starved: newStarvation(log), closed: make(chan struct{})}
}

type patientListener struct {
	net.Listener
	starved *starvation
	once    sync.Once
	closed  chan struct{}
}

func (l *patientListener) Accept() (net.Conn, error) {
	return l.starved.accept(l.Listener, l.closed, nil)
}

func (l *patientListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}
