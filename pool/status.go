package pool

import (
	"time"

	"github.com/corral-dev/corral/health"
)

// Worker states, as shown in /status.
const (
	StateStarting  = "starting"  // spawned, not yet passing its health check
	StateReady     = "ready"     // in rotation
	StateUnhealthy = "unhealthy" // out of rotation, still running
	StateDraining  = "draining"  // out of rotation, finishing in-flight requests
	StateStopping  = "stopping"  // signalled, waiting for the process group to exit
	StateBackoff   = "backoff"   // crashed, waiting to restart
)

// AppStatus is a snapshot of one app for /status and metrics.
type AppStatus struct {
	Name      string `json:"name"`
	Instances int    `json:"instances"` // desired now
	// Configured is the file's instances; it differs from Instances after a
	// runtime scale, until the next reload.
	Configured int            `json:"configured"`
	Ready      int            `json:"ready"` // workers in rotation
	Queued     int64          `json:"queued"`
	Workers    []WorkerStatus `json:"workers"`
	// Roll describes the last rolling restart (empty before the first).
	Roll RollStatus `json:"roll"`
	// Autoscale shows bounds, count and last decision; nil when off.
	Autoscale *AutoscaleStatus `json:"autoscale,omitempty"`
}

// RollStatus describes an app's most recent rolling restart.
type RollStatus struct {
	State    string    `json:"state,omitempty"` // "running", "done", "failed"
	Reason   string    `json:"reason,omitempty"`
	Started  time.Time `json:"started,omitempty"`
	Finished time.Time `json:"finished,omitempty"`
	Message  string    `json:"message,omitempty"`
}

// WorkerStatus is a snapshot of one worker.
type WorkerStatus struct {
	ID     string `json:"id"`
	PID    int    `json:"pid"`
	Port   int    `json:"port"`
	Socket string `json:"socket,omitempty"` // the Unix socket path of a {socket} app's worker (Port is 0)
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"` // why it is in this state
	// Restarts counts restarts after a failure (crash or health).
	Restarts uint64 `json:"restarts"`
	// Replacements counts every replacement of the slot's process by cause
	// (every cause, zeros included); crash + health = Restarts.
	Replacements map[string]uint64 `json:"replacements"`
	StartedAt    time.Time         `json:"started_at"`
	ReadyAt      time.Time         `json:"ready_at,omitempty"`
	Inflight     int64             `json:"inflight"`
	Requests     uint64            `json:"requests"`
	// MemoryBytes is the RSS of the worker's whole process group at the
	// last sampling round (0 before the first).
	MemoryBytes int64 `json:"memory_bytes"`
	// CPUSeconds is the slot's CPU time, user and system, of every process
	// its workers ran: the counter corral_worker_cpu_seconds_total shows.
	CPUSeconds  float64       `json:"cpu_seconds"`
	Ejected     bool          `json:"ejected"`
	EjectReason string        `json:"eject_reason,omitempty"`
	Health      *health.Stats `json:"health,omitempty"`
	Generation  int           `json:"generation"` // grows with each rolling restart of the app
	LastExit    string        `json:"last_exit,omitempty"`
}
