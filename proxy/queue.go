package proxy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-dev/corral/pool"
)

// queue holds an app's requests waiting for a worker below its cap, in
// arrival order. It survives reloads for an app that keeps its name. Only
// requests that must wait take its lock; the request path checks the atomic
// length first.
type queue struct {
	mu      sync.Mutex
	waiters []*waiter
	length  atomic.Int64
	// rt is the app's current route (the newest SetApps), for handoffs.
	rt atomic.Pointer[route]
}

// waiter is one queued request; granted receives the backend it was given.
type waiter struct {
	req     *Request
	granted chan *pool.Backend
}

// handoff gives free backends to waiters, head first, until none is free.
func (q *queue) handoff() {
	rt := q.rt.Load()
	if rt == nil {
		return
	}
	t := rt.src.Table()
	if t == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.waiters) > 0 {
		w := q.waiters[0]
		w.req.now = time.Now().UnixNano()
		w.req.max = int64(t.App.MaxInflight)
		b := pick(rt.sel, t, w.req)
		if b == nil {
			return
		}
		q.waiters[0] = nil
		q.waiters = q.waiters[1:]
		q.length.Add(-1)
		w.granted <- b
	}
}

// enqueue adds w at the tail unless the queue already holds size waiters.
func (q *queue) enqueue(w *waiter, size int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiters) >= size {
		return false
	}
	q.waiters = append(q.waiters, w)
	q.length.Add(1)
	return true
}

// leave removes w; it reports false when w was already granted a backend
// (which is then waiting in w.granted).
func (q *queue) leave(w *waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, o := range q.waiters {
		if o == w {
			copy(q.waiters[i:], q.waiters[i+1:])
			q.waiters[len(q.waiters)-1] = nil
			q.waiters = q.waiters[:len(q.waiters)-1]
			q.length.Add(-1)
			return true
		}
	}
	return false
}
