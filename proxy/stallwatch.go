package proxy

import (
	"sync"
	"time"
)

// A fasthttp response body is written by the engine, which notices a client
// that left only when a write fails. While the worker is silent (a long
// poll, a slow report) there is no write, and the worker's slot, its
// connection and the spool would stay taken until the worker speaks again.
// stallWatch checks, about once a second, the client connections of the
// relays that made no progress since the last look, and abandons a relay
// whose client has closed (net/http sees this through its request context).

// stallCheckEvery is how often stalled relays are looked at: a client that
// left is noticed within about two of these.
const stallCheckEvery = 500 * time.Millisecond

type stallWatch struct {
	every   time.Duration // stallCheckEvery unless set (tests)
	mu      sync.Mutex
	relays  map[*relay]uint32 // -> progress seen at the last look
	running bool
	stop    chan struct{}
}

// add watches r (its client is on r.client) until remove.
func (w *stallWatch) add(r *relay) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.relays == nil {
		w.relays = map[*relay]uint32{}
	}
	w.relays[r] = r.progress.Load()
	if !w.running {
		w.running = true
		w.stop = make(chan struct{})
		every := w.every
		if every <= 0 {
			every = stallCheckEvery
		}
		go w.loop(w.stop, every)
	}
}

// remove stops watching r. After it returns, the watch never touches r.
func (w *stallWatch) remove(r *relay) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.relays, r)
	if len(w.relays) == 0 && w.running {
		w.running = false
		close(w.stop)
	}
}

func (w *stallWatch) loop(stop chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			w.sweep()
		}
	}
}

// sweep abandons the stalled relays whose client has gone. It holds the
// lock throughout, so no relay it looks at can be released meanwhile.
func (w *stallWatch) sweep() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for r, seen := range w.relays {
		now := r.progress.Load()
		w.relays[r] = now
		if now != seen || !peerClosed(r.client) {
			continue
		}
		r.abandon()
		delete(w.relays, r)
	}
}
