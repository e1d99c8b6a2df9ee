package proxy

import (
	"math/rand/v2"
	"net/netip"
	"sync/atomic"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// Request is what a balancing policy may look at: the client address and
// the sticky cookie, plus the filter the proxy applies to candidates.
type Request struct {
	// ClientIP is the direct peer's address.
	ClientIP netip.Addr
	// Sticky is the value of the app's sticky cookie, nil when absent.
	Sticky []byte

	// now is the request time in unix nanoseconds (ejection checks).
	now int64
	// max is the app's per-worker cap; 0 = unlimited.
	max int64
	// avoid is the backend the previous try failed on.
	avoid *pool.Backend
	// allowEjected lets ejected backends compete when no other is left.
	allowEjected bool
}

// eligible reports whether b may take the request under r's filter.
func (r *Request) eligible(b *pool.Backend) bool {
	if b == r.avoid || b.Draining.Load() {
		return false
	}
	if r.max > 0 && b.Inflight.Load() >= r.max {
		return false
	}
	if !r.allowEjected {
		if u := b.EjectedUntil.Load(); u != 0 && r.now < u {
			return false
		}
	}
	return true
}

// Selector is a balancing policy: it picks one eligible backend of t for r,
// or nil when none is eligible.
type Selector interface {
	// Select returns the backend for r, or nil; it must only return
	// backends for which the filter in r holds and must not block.
	Select(t *pool.Table, r *Request) *pool.Backend
}

// newSelector returns the policy named by the app's Balance setting.
func newSelector(policy string) Selector {
	switch policy {
	case config.BalanceRoundRobin:
		return &roundRobin{}
	case config.BalanceP2C:
		return powerOfTwo{}
	case config.BalanceIPHash:
		return ipHash{}
	case config.BalanceCookie:
		return cookieAffinity{}
	default:
		return leastOutstanding{}
	}
}

// leastOutstanding picks the eligible backend with the fewest requests in
// flight, breaking ties at random so equal workers share the load.
type leastOutstanding struct{}

func (leastOutstanding) Select(t *pool.Table, r *Request) *pool.Backend {
	var best *pool.Backend
	var bestN int64
	ties := 0
	for _, b := range t.Backends {
		if !r.eligible(b) {
			continue
		}
		n := b.Inflight.Load()
		switch {
		case best == nil || n < bestN:
			best, bestN, ties = b, n, 1
		case n == bestN:
			ties++
			if rand.IntN(ties) == 0 {
				best = b
			}
		}
	}
	return best
}

// roundRobin cycles through the eligible backends. A skipped backend
// consumes its turn, so the others keep equal shares.
type roundRobin struct {
	next atomic.Uint64
}

func (s *roundRobin) Select(t *pool.Table, r *Request) *pool.Backend {
	n := uint64(len(t.Backends))
	if n == 0 {
		return nil
	}
	for range n {
		if b := t.Backends[(s.next.Add(1)-1)%n]; r.eligible(b) {
			return b
		}
	}
	return nil
}

// powerOfTwo draws two backends at random and takes the less loaded one;
// it falls back to a full scan when the draw finds nothing eligible.
type powerOfTwo struct{}

func (powerOfTwo) Select(t *pool.Table, r *Request) *pool.Backend {
	n := len(t.Backends)
	if n < 2 {
		return leastOutstanding{}.Select(t, r)
	}
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	a, b := t.Backends[i], t.Backends[j]
	okA, okB := r.eligible(a), r.eligible(b)
	switch {
	case okA && okB:
		if b.Inflight.Load() < a.Inflight.Load() {
			return b
		}
		return a
	case okA:
		return a
	case okB:
		return b
	}
	return leastOutstanding{}.Select(t, r)
}

// ipHash maps a client address to a backend by rendezvous hashing, so a
// client keeps its backend and only clients of a leaving backend move.
type ipHash struct{}

func (ipHash) Select(t *pool.Table, r *Request) *pool.Backend {
	ip := r.ClientIP.As16()
	seed := fnvBytes(fnvOffset, ip[:])
	var best *pool.Backend
	var bestScore uint64
	for _, b := range t.Backends {
		if !r.eligible(b) {
			continue
		}
		if s := mix(fnvString(seed, b.ID)); best == nil || s > bestScore {
			best, bestScore = b, s
		}
	}
	return best
}

// cookieAffinity sends a request to the backend its sticky cookie names
// (the slot id) and falls back to least outstanding when that backend is
// gone or not eligible; the engine then sets a new cookie.
type cookieAffinity struct{}

func (cookieAffinity) Select(t *pool.Table, r *Request) *pool.Backend {
	if len(r.Sticky) > 0 {
		for _, b := range t.Backends {
			if b.ID == string(r.Sticky) {
				if r.eligible(b) {
					return b
				}
				break
			}
		}
	}
	return leastOutstanding{}.Select(t, r)
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

// mix is a 64-bit finalizer that spreads FNV's weak low bits.
func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// tryAcquire raises b's in-flight count unless that would pass max, and
// backs off when b is draining. The compare-and-swap keeps two requests
// from both taking the last slot of a max_inflight = 1 worker.
func tryAcquire(b *pool.Backend, max int64) bool {
	if max <= 0 {
		return b.Acquire()
	}
	for {
		n := b.Inflight.Load()
		if n >= max {
			return false
		}
		if b.Inflight.CompareAndSwap(n, n+1) {
			break
		}
	}
	if b.Draining.Load() {
		b.Release()
		return false
	}
	return true
}

// pick selects and acquires a backend of t for r, relaxing the filter step
// by step: first avoiding the previous failure, then allowing it again,
// then allowing ejected backends when no healthy one is left. It returns
// nil when every candidate is at its cap (the caller queues) or none exists.
func pick(sel Selector, t *pool.Table, r *Request) *pool.Backend {
	for range len(t.Backends) + 2 {
		b := sel.Select(t, r)
		if b == nil {
			switch {
			case r.avoid != nil:
				r.avoid = nil
			case !r.allowEjected && !anyHealthy(t, r.now):
				r.allowEjected = true
			default:
				return nil
			}
			continue
		}
		if tryAcquire(b, r.max) {
			return b
		}
	}
	return nil
}

// anyHealthy reports whether t has a backend that is neither draining nor
// ejected at now.
func anyHealthy(t *pool.Table, now int64) bool {
	for _, b := range t.Backends {
		if b.Draining.Load() {
			continue
		}
		if u := b.EjectedUntil.Load(); u == 0 || now >= u {
			return true
		}
	}
	return false
}
