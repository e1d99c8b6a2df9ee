package proxy

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// passiveSuccess records an answer that counts as healthy: it resets the
// failure streak and, once b is back in rotation, its ejection history.
// Loads come first so the common case writes nothing.
func passiveSuccess(b *pool.Backend, now int64) {
	if b.ConsecutiveFailures.Load() != 0 {
		b.ConsecutiveFailures.Store(0)
	}
	if b.Ejections.Load() != 0 {
		if u := b.EjectedUntil.Load(); u == 0 || now >= u {
			b.Ejections.Store(0)
		}
	}
}

// passiveFailure records a failure of b (connection error, timeout, or a
// 5xx when the app counts them) and ejects b after Passive.Failures in a
// row, unless that would eject more than the app's cap. It reports whether
// this call ejected b.
func passiveFailure(log hclog.Logger, t *pool.Table, b *pool.Backend, now time.Time, reason string) bool {
	p := t.App.Passive
	if p.Failures <= 0 {
		return false
	}
	if b.ConsecutiveFailures.Add(1) < int32(p.Failures) {
		return false
	}
	old := b.EjectedUntil.Load()
	if old != 0 && now.UnixNano() < old {
		return false // already out
	}
	if !ejectionAllowed(t, p, now) {
		return false
	}
	until := now.Add(ejectionTime(p, b.Ejections.Load())).UnixNano()
	if !b.EjectedUntil.CompareAndSwap(old, until) {
		return false // another request ejected it first
	}
	n := b.Ejections.Add(1)
	b.ConsecutiveFailures.Store(0)
	b.LastEjectReason.Store(&reason)
	log.Warn("worker ejected", "app", t.App.Name, "worker", b.ID, "reason", reason,
		"for", time.Duration(until-now.UnixNano()), "ejections", n)
	return true
}

// ejectionAllowed reports whether one more backend of t may be ejected
// without passing the cap; at least one backend always stays a candidate.
func ejectionAllowed(t *pool.Table, p config.Passive, now time.Time) bool {
	total := len(t.Backends)
	limit := total * p.MaxEjectedPercent / 100
	if limit > total-1 {
		limit = total - 1
	}
	ejected := 0
	for _, o := range t.Backends {
		if o.Ejected(now) {
			ejected++
		}
	}
	return ejected+1 <= limit
}

// ejectionTime is BaseEjection doubled per previous ejection, capped at
// MaxEjection.
func ejectionTime(p config.Passive, previous int32) time.Duration {
	d := p.BaseEjection
	if d <= 0 {
		d = 10 * time.Second
	}
	for i := int32(0); i < previous && (p.MaxEjection <= 0 || d < p.MaxEjection); i++ {
		d *= 2
	}
	if p.MaxEjection > 0 && d > p.MaxEjection {
		d = p.MaxEjection
	}
	return d
}
