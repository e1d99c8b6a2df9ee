package main

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// logBuffer bounds the log bytes waiting for a slow or blocked output.
const logBuffer = 1 << 20

// logOutput is where corral's log goes: writes land in a buffer that one
// goroutine copies to the real output (stderr). A log call never waits for
// that output, so a stderr that is slow or blocked (a full pipe nobody
// reads, a stuck log collector) never stalls the supervisor, a worker's
// output reader (and so the worker, on a full pipe), or a request writing
// its access line. Past logBuffer bytes waiting, whole lines are dropped
// (the logger writes one line per Write) and counted, and once the output
// takes lines again, dropped(n) is called to say so.
type logOutput struct {
	out     io.Writer
	dropped func(n int) // writes the notice straight to out; called on the copying goroutine

	mu      sync.Mutex
	pending []byte
	lost    int
	closed  bool
	wake    chan struct{}
	done    chan struct{}
	total   atomic.Uint64 // lines dropped since the start
}

// newLogOutput starts the goroutine that copies to out; Close ends it.
func newLogOutput(out io.Writer, dropped func(n int)) *logOutput {
	l := &logOutput{out: out, dropped: dropped, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go l.copy()
	return l
}

// Write implements io.Writer; it never blocks on the output.
func (l *logOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	if len(l.pending)+len(p) > logBuffer {
		l.lost++
		l.total.Add(1)
	} else {
		l.pending = append(l.pending, p...)
	}
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// Dropped returns how many lines were dropped since the start.
func (l *logOutput) Dropped() uint64 { return l.total.Load() }

// copy writes what is pending to the output, two buffers swapping, so a
// steady log allocates nothing.
func (l *logOutput) copy() {
	defer close(l.done)
	var buf []byte
	for {
		l.mu.Lock()
		buf, l.pending = l.pending, buf[:0]
		lost, closed := l.lost, l.closed
		l.lost = 0
		l.mu.Unlock()
		if len(buf) == 0 && lost == 0 {
			if closed {
				return
			}
			<-l.wake
			continue
		}
		if len(buf) > 0 {
			_, _ = l.out.Write(buf)
		}
		if lost > 0 {
			l.dropped(lost)
		}
	}
}

// Close writes out what is pending, waiting at most grace for an output
// that does not take it; lines logged after Close are not written.
func (l *logOutput) Close(grace time.Duration) {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-l.done:
	case <-t.C:
	}
}
