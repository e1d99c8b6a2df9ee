package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/corral-dev/corral/pool"
)

// pollInterval is how often a queued request checks whether its client
// left (fasthttp has no per-request cancel signal) and whether capacity
// appeared without a release (a new table, an ejection that ended).
const pollInterval = 20 * time.Millisecond

// defaultQueueTimeout bounds a queue wait when the app leaves it at 0.
const defaultQueueTimeout = 30 * time.Second

// clientWatch tells a waiting request that its client is gone: done for
// engines with a cancel channel, conn for engines whose client connection
// must be polled.
type clientWatch struct {
	done <-chan struct{}
	conn net.Conn
}

// acquire returns a backend of t holding an in-flight slot for r, queueing
// the request when every backend is at its cap.
func acquire(rt *route, t *pool.Table, r *Request, cw clientWatch) (*pool.Backend, error) {
	if len(t.Backends) == 0 {
		t.Stats.NoBackend.Add(1)
		return nil, ErrNoBackend
	}
	q := rt.queue
	if q.length.Load() == 0 {
		if b := pick(rt.sel, t, r); b != nil {
			return b, nil
		}
	}
	if allDraining(t) {
		t.Stats.NoBackend.Add(1)
		return nil, ErrNoBackend
	}
	size := t.App.Queue.Size
	w := &waiter{req: r, granted: make(chan *pool.Backend, 1)}
	if size <= 0 || !q.enqueue(w, size) {
		t.Stats.QueueRejected.Add(1)
		return nil, ErrQueueFull
	}
	t.Stats.Queued.Add(1)
	queuedAt := time.Now()
	defer func() {
		t.Stats.Queued.Add(-1)
		t.Stats.QueueWait.Observe(time.Since(queuedAt))
	}()
	q.handoff()

	timeout := t.App.Queue.Timeout
	if timeout <= 0 {
		timeout = defaultQueueTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case b := <-w.granted:
			return b, nil
		case <-deadline.C:
			if q.leave(w) {
				t.Stats.QueueTimeouts.Add(1)
				return nil, ErrQueueTimeout
			}
			return <-w.granted, nil // granted just in time: use it
		case <-cw.done:
			return nil, leaveCancelled(rt, t, w)
		case <-tick.C:
			if cw.conn != nil && peerClosed(cw.conn) {
				return nil, leaveCancelled(rt, t, w)
			}
			q.handoff()
		}
	}
}

// leaveCancelled takes a waiter whose client left out of the queue, giving
// back a backend it may have been granted meanwhile.
func leaveCancelled(rt *route, t *pool.Table, w *waiter) error {
	if !rt.queue.leave(w) {
		release(rt, <-w.granted)
	}
	t.Stats.ClientCancelled.Add(1)
	return ErrClientGone
}

// release ends a request's hold on b and hands the slot to the app's queue.
func release(rt *route, b *pool.Backend) {
	b.Release()
	if rt.queue.length.Load() > 0 {
		rt.queue.handoff()
	}
}

func allDraining(t *pool.Table) bool {
	for _, b := range t.Backends {
		if !b.Draining.Load() {
			return false
		}
	}
	return true
}

// requestIDs makes cheap unique request ids: a random per-process prefix
// and a counter.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

// appendNext appends a fresh id to dst.
func (g *requestIDs) appendNext(dst []byte) []byte {
	dst = append(dst, g.prefix...)
	return strconv.AppendUint(dst, g.n.Add(1), 36)
}

// trusted reports whether addr is one of the configured trusted proxies.
func trusted(prefixes []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// appendRequestStart appends the X-Request-Start value for t.
func appendRequestStart(dst []byte, t time.Time) []byte {
	dst = append(dst, "t="...)
	return strconv.AppendInt(dst, t.UnixMicro(), 10)
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c|0x20 != d|0x20 {
			return false
		}
		if c != d && !(c|0x20 >= 'a' && c|0x20 <= 'z') {
			return false
		}
	}
	return true
}

// connectionTokens calls f for each comma-separated token of a Connection
// header value.
func connectionTokens(v []byte, f func(tok []byte)) {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != ',' {
			i++
		}
		tok := trimSpace(v[:i])
		if len(tok) > 0 {
			f(tok)
		}
		if i == len(v) {
			return
		}
		v = v[i+1:]
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// b2s views b as a string without copying; the string must not outlive b.
func b2s(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
