// Package health runs active probes against workers and reports when a
// worker's health flips. It imports neither pool nor proxy: transitions go
// out through the one-method Observer interface, which the pool satisfies.
package health

import "time"

// Observer receives health transitions. The pool implements it.
type Observer interface {
	// HealthChanged is called once per real transition, never per probe.
	// It must not block for long (the pool forwards it to its supervisor).
	HealthChanged(t Transition)
}

// Transition is one change of a worker's health.
type Transition struct {
	Worker  string    // worker id ("web-1")
	Healthy bool      // the new state
	Reason  string    // why: "status 500", "timeout after 1s", "connection refused", "passed"
	At      time.Time // when the deciding probe finished
}

// Stats are the numbers of a worker's most recent probes, for /status.
type Stats struct {
	Healthy             bool      `json:"healthy"`
	LastCheck           time.Time `json:"last_check"`
	LastLatencyMillis   float64   `json:"last_latency_ms"`
	LastError           string    `json:"last_error,omitempty"`
	ConsecutivePasses   int       `json:"consecutive_passes"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	TotalChecks         uint64    `json:"total_checks"`
	TotalFailures       uint64    `json:"total_failures"`
}
