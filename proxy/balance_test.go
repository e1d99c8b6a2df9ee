package proxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

func table(n int) *pool.Table {
	app := &config.App{Name: "web"}
	t := &pool.Table{App: app, Stats: &pool.AppStats{}}
	for i := 1; i <= n; i++ {
		t.Backends = append(t.Backends, &pool.Backend{ID: "web-" + itoa(i), Stats: &pool.WorkerStats{}})
	}
	return t
}

func counts(sel Selector, t *pool.Table, n int, mk func(i int) *Request) map[string]int {
	c := map[string]int{}
	for i := range n {
		r := mk(i)
		r.now = time.Now().UnixNano()
		if b := sel.Select(t, r); b != nil {
			c[b.ID]++
		} else {
			c["<nil>"]++
		}
	}
	return c
}

func plain(int) *Request { return &Request{} }

func within(t *testing.T, c map[string]int, ids []string, want, slack int) {
	t.Helper()
	for _, id := range ids {
		if c[id] < want-slack || c[id] > want+slack {
			t.Errorf("%s got %d picks, want %d±%d (all: %v)", id, c[id], want, slack, c)
		}
	}
}

func TestLeastOutstandingPrefersIdleAndSpreadsTies(t *testing.T) {
	tb := table(4)
	tb.Backends[0].Inflight.Store(3)
	tb.Backends[1].Inflight.Store(1)
	tb.Backends[2].Inflight.Store(1)
	tb.Backends[3].Inflight.Store(2)
	c := counts(leastOutstanding{}, tb, 4000, plain)
	if c["web-1"] != 0 || c["web-4"] != 0 {
		t.Fatalf("busier backends picked: %v", c)
	}
	within(t, c, []string{"web-2", "web-3"}, 2000, 300)
}

func TestRoundRobinCyclesAndSkipsDraining(t *testing.T) {
	tb := table(3)
	within(t, counts(&roundRobin{}, tb, 300, plain), []string{"web-1", "web-2", "web-3"}, 100, 0)
	tb.Backends[1].Draining.Store(true)
	c := counts(&roundRobin{}, tb, 300, plain)
	if c["web-2"] != 0 {
		t.Fatalf("draining backend picked: %v", c)
	}
	within(t, c, []string{"web-1", "web-3"}, 150, 1)
}

func TestPowerOfTwoAvoidsLoaded(t *testing.T) {
	tb := table(3)
	tb.Backends[0].Inflight.Store(10)
	c := counts(powerOfTwo{}, tb, 3000, plain)
	// web-1 loses every draw it is part of.
	if c["web-1"] != 0 {
		t.Fatalf("loaded backend picked: %v", c)
	}
	within(t, c, []string{"web-2", "web-3"}, 1500, 250)
}

func TestIPHashStableAndSpreads(t *testing.T) {
	tb := table(4)
	ip := func(i int) *Request {
		return &Request{ClientIP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})}
	}
	first := map[int]string{}
	for i := range 400 {
		r := ip(i)
		r.now = time.Now().UnixNano()
		first[i] = ipHash{}.Select(tb, r).ID
	}
	within(t, counts(ipHash{}, tb, 400, ip), []string{"web-1", "web-2", "web-3", "web-4"}, 100, 45)
	// web-3 leaves: only its clients move.
	tb.Backends[2].Draining.Store(true)
	for i := range 400 {
		r := ip(i)
		r.now = time.Now().UnixNano()
		got := ipHash{}.Select(tb, r).ID
		if first[i] != "web-3" && got != first[i] {
			t.Fatalf("client %d moved from %s to %s", i, first[i], got)
		}
		if got == "web-3" {
			t.Fatalf("client %d sent to draining backend", i)
		}
	}
}

func TestCookieStickyFallsBackAndResticks(t *testing.T) {
	tb := table(3)
	sticky := func(id string) func(int) *Request {
		return func(int) *Request { return &Request{Sticky: []byte(id)} }
	}
	if c := counts(cookieAffinity{}, tb, 50, sticky("web-2")); c["web-2"] != 50 {
		t.Fatalf("sticky to web-2: %v", c)
	}
	tb.Backends[1].Draining.Store(true)
	c := counts(cookieAffinity{}, tb, 100, sticky("web-2"))
	if c["web-2"] != 0 || c["web-1"]+c["web-3"] != 100 {
		t.Fatalf("fallback when web-2 leaves: %v", c)
	}
	// The unknown slot from an old cookie also falls back.
	if c := counts(cookieAffinity{}, tb, 10, sticky("web-9")); c["<nil>"] != 0 {
		t.Fatalf("unknown cookie: %v", c)
	}
	// A request re-stuck to web-3 stays there.
	if c := counts(cookieAffinity{}, tb, 20, sticky("web-3")); c["web-3"] != 20 {
		t.Fatalf("re-stick to web-3: %v", c)
	}
}

func TestEligibleSkipsFullEjectedAvoided(t *testing.T) {
	tb := table(3)
	now := time.Now()
	tb.Backends[0].Inflight.Store(1)
	tb.Backends[1].EjectedUntil.Store(now.Add(time.Minute).UnixNano())
	r := &Request{max: 1, now: now.UnixNano()}
	for range 20 {
		if b := (leastOutstanding{}).Select(tb, r); b != tb.Backends[2] {
			t.Fatalf("picked %v, want web-3", b)
		}
	}
	r.avoid = tb.Backends[2]
	if b := (leastOutstanding{}).Select(tb, r); b != nil {
		t.Fatalf("picked %s with everything filtered", b.ID)
	}
}

func TestPickRelaxesAvoidThenEjection(t *testing.T) {
	tb := table(2)
	now := time.Now()
	for _, b := range tb.Backends {
		b.EjectedUntil.Store(now.Add(time.Minute).UnixNano())
	}
	r := &Request{now: now.UnixNano(), avoid: tb.Backends[0]}
	b := pick(leastOutstanding{}, tb, r)
	if b == nil {
		t.Fatal("no backend while all are ejected: want the least bad")
	}
	if b.Inflight.Load() != 1 {
		t.Fatalf("inflight %d, want 1", b.Inflight.Load())
	}
}

func TestTryAcquireRespectsCap(t *testing.T) {
	b := &pool.Backend{}
	if !tryAcquire(b, 1) || tryAcquire(b, 1) {
		t.Fatal("cap 1 allowed two")
	}
	b.Release()
	b.Draining.Store(true)
	if tryAcquire(b, 1) || b.Inflight.Load() != 0 {
		t.Fatal("draining backend acquired")
	}
}

func TestPassiveEjectionAndCap(t *testing.T) {
	tb := table(2)
	tb.App.Passive = config.Passive{Failures: 2, BaseEjection: time.Second, MaxEjection: 3 * time.Second, MaxEjectedPercent: 50}
	now := time.Now()
	log := newTestProxy(t, testSettings()).log
	a, b := tb.Backends[0], tb.Backends[1]
	if passiveFailure(log, tb, a, now, "x") {
		t.Fatal("ejected after one failure")
	}
	if !passiveFailure(log, tb, a, now, "x") || !a.Ejected(now) {
		t.Fatal("not ejected after two failures")
	}
	if got := time.Duration(a.EjectedUntil.Load() - now.UnixNano()); got != time.Second {
		t.Fatalf("first ejection %v, want 1s", got)
	}
	// The cap: with a ejected, b (the last of two) stays in.
	passiveFailure(log, tb, b, now, "x")
	if passiveFailure(log, tb, b, now, "x") || b.Ejected(now) {
		t.Fatal("second of two backends ejected past the 50% cap")
	}
	// Repeated ejections grow and are capped.
	later := now.Add(2 * time.Second)
	passiveFailure(log, tb, a, later, "x")
	passiveFailure(log, tb, a, later, "x")
	if got := time.Duration(a.EjectedUntil.Load() - later.UnixNano()); got != 2*time.Second {
		t.Fatalf("second ejection %v, want 2s", got)
	}
	if ejectionTime(tb.App.Passive, 5) != 3*time.Second {
		t.Fatal("ejection not capped")
	}
	// A success once back resets the history.
	passiveSuccess(a, later.Add(10*time.Second).UnixNano())
	if a.Ejections.Load() != 0 || a.ConsecutiveFailures.Load() != 0 {
		t.Fatal("success did not reset")
	}
}
