// Package config defines corral's HCL configuration: its schema, loading
// (parse -> decode -> defaults -> validate), and the difference between two
// loaded configurations.
package config

import (
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Config is one fully loaded, defaulted and validated configuration file.
// A *Config is never modified after Load returns it.
type Config struct {
	// Path is the absolute path of the file this config was loaded from.
	Path string
	// Listen is the public address ("127.0.0.1:8080").
	Listen string
	// WorkerPorts is the inclusive range private worker ports are taken from.
	WorkerPorts PortRange
	// Admin configures the admin API.
	Admin Admin
	// Log configures the root logger.
	Log Log
	// Proxy holds the public proxy settings shared by every app.
	Proxy Proxy
	// Shutdown holds the settings for a graceful stop of corral.
	Shutdown Shutdown
	// Apps are the configured apps, in file order.
	Apps []*App
}

// PortRange is an inclusive range of TCP ports.
type PortRange struct {
	First, Last int
}

// Admin configures the admin API listener and who may change corral
// through it.
type Admin struct {
	// Listen is the admin address; empty disables the admin API.
	Listen string
	// Token is the bearer token the mutating endpoints require: admin.token,
	// or what admin.token_file holds (its trailing newline trimmed); "" when
	// the file sets neither ($CORRAL_ADMIN_TOKEN is the caller's business).
	Token string
	// TokenFile is the absolute path of admin.token_file; "" when not set.
	TokenFile string
	// Hosts are the host names, beside loopback names and IP literals, that
	// the admin API answers to (the guard against DNS rebinding).
	Hosts []string
}

// AccessEqual reports whether a and b set the same token and hosts.
func (a Admin) AccessEqual(b Admin) bool {
	return a.Token == b.Token && a.TokenFile == b.TokenFile && slices.Equal(a.Hosts, b.Hosts)
}

// Log configures logging.
type Log struct {
	// Level is one of trace, debug, info, warn, error.
	Level string
	// Format is "text" or "json".
	Format string
	// Access logs one line per proxied request (off by default).
	Access bool
}

// Proxy holds settings of the public proxy listener and its forwarding.
type Proxy struct {
	ReadHeaderTimeout     time.Duration // client must send all headers within this
	ReadTimeout           time.Duration // whole request (headers and body); 0 = none
	WriteTimeout          time.Duration // writing a response; 0 = none (streams)
	IdleTimeout           time.Duration // client keep-alive idle
	MaxHeaderBytes        int           // request line + headers; larger -> 431
	MaxBodyBytes          int64         // request body; larger -> 413; 0 = unlimited
	MaxConnections        int           // open client connections across the public listeners; 0 = derived from the file limit
	DialTimeout           time.Duration // connecting to a worker
	ResponseHeaderTimeout time.Duration // worker must answer headers within this -> else 504
	WorkerIdleTimeout     time.Duration // idle pooled connections to workers are closed after this
	TrustedProxies        []netip.Prefix
	RequestID             bool // generate X-Request-Id when the client sent none
	H2C                   bool // accept cleartext HTTP/2 on the public listener
	TLS                   *TLS // nil = plain HTTP
	Buffering             Buffering
}

// Buffering says what the proxy reads ahead of slow clients so that a
// worker's slot is not held at the client's speed. Sizes are bytes; 0 turns
// that tier off.
type Buffering struct {
	// RequestMemory: request bodies up to this Content-Length are read whole
	// into memory before a worker is chosen.
	RequestMemory int64
	// RequestDisk: larger ones up to this go to a temporary file first;
	// larger still stream to the worker at the client's speed.
	RequestDisk int64
	// ResponseMemory bounds, per response, what is read from the worker
	// ahead of the client into memory...
	ResponseMemory int64
	// ResponseDisk ...and then into a temporary file; past both, the rest
	// of the response moves at the client's speed.
	ResponseDisk int64
	// MemoryLimit bounds all buffers in memory together; past it, new data
	// goes to temporary files (or, without a disk tier, streams).
	MemoryLimit int64
	// DiskLimit bounds all temporary files together (unsent response bytes
	// and held request bodies); past it, spools wait for their clients and
	// bodies stream.
	DiskLimit int64
	// Chunked also buffers responses of unknown length.
	Chunked bool
	// Dir holds the temporary files (absolute); "" = the system's.
	Dir string
}

// TLS configures HTTPS (with HTTP/2) on the public listener.
type TLS struct {
	Cert string // absolute path
	Key  string // absolute path
}

// Shutdown configures how corral stops.
type Shutdown struct {
	// Timeout bounds the whole graceful shutdown (drain requests, stop workers).
	Timeout time.Duration
	// PreStopDelay keeps serving after SIGTERM (with /readyz answering 503)
	// so load balancers stop sending before connections are refused.
	PreStopDelay time.Duration
}

// Balance policy names.
const (
	BalanceLeastOutstanding = "least_outstanding"
	BalanceRoundRobin       = "round_robin"
	BalanceP2C              = "p2c"
	BalanceIPHash           = "ip_hash"
	BalanceCookie           = "cookie"
)

// App is one app block: how to run its workers and how to route to them.
type App struct {
	Name string

	// Process settings: a change to any of these needs a rolling restart.
	Command []string          // argv; "{port}" (or "{socket}") is replaced in every element
	Dir     string            // absolute working directory
	Env     map[string]string // added to the inherited environment
	User    string            // run workers as this user (corral must be root); "" = same as corral
	Group   string            // run workers with this group; "" = the user's primary group

	// Background is set by serve = false: no port, no route, not in the
	// proxy; a worker is ready once it has stayed up for SettleTime.
	Background bool
	SettleTime time.Duration

	// Pool settings.
	Instances    int
	StopSignal   syscall.Signal
	DrainTimeout time.Duration // bound on waiting for in-flight requests before the stop signal
	StopTimeout  time.Duration // stop signal -> SIGKILL
	StartTimeout time.Duration // spawn -> ready bound
	Backoff      Backoff
	// Output bounds what of the worker's output reaches the log.
	Output        Output
	Surge         int           // extra workers started at once during a rolling restart
	ExitOnFailure time.Duration // 0 = off; else exit corral non-zero when the app has no ready worker for this long
	Watch         []string      // absolute paths; a change under them rolls the app (dev mode)
	WatchDebounce time.Duration
	Recycle       Recycle
	// Autoscale moves the worker count between its bounds by load; nil = off
	// (then Instances is fixed). When on, Instances is the starting size.
	Autoscale *Autoscale

	// Health, nil when the app has no health block (readiness = TCP connect).
	Health *Health
	// Passive outlier detection from the proxy's side.
	Passive Passive

	// Routing and balancing.
	Hosts        []string // exact ("example.com") or wildcard ("*.example.com"), lowercased
	PathPrefix   string   // "" = no path claim
	StripPrefix  bool     // remove PathPrefix before forwarding
	Balance      string   // one of the Balance* names
	StickyCookie string   // cookie name for BalanceCookie
	MaxInflight  int      // per worker; 0 = unlimited
	Queue        Queue
	Retries      int           // extra tries after the first
	RetryTimeout time.Duration // total time for all tries
}

// UsesSocket reports whether a's workers listen on a Unix socket: some
// argument of a served app's command contains "{socket}".
func (a *App) UsesSocket() bool {
	if a.Background {
		return false
	}
	for _, arg := range a.Command {
		if strings.Contains(arg, "{socket}") {
			return true
		}
	}
	return false
}

// Recycle replaces a worker the zero-downtime way once it reaches a limit;
// a zero limit is off.
type Recycle struct {
	MaxRequests int           // requests served; each worker's threshold is drawn in [N, N*1.1]
	MaxMemory   int64         // bytes of RSS of the worker's whole process group
	MaxAge      time.Duration // time since start; each worker's threshold is drawn in [d, d*1.1]
	Interval    time.Duration // how often the limits are checked (check_interval)
}

// On reports whether any limit is set.
func (r Recycle) On() bool { return r.MaxRequests > 0 || r.MaxMemory > 0 || r.MaxAge > 0 }

// Autoscale adds workers while the app's workers are saturated and removes
// them, one at a time, once they are not; see the README for the rule.
type Autoscale struct {
	Min, Max       int           // bounds on the worker count
	ScaleUpAfter   time.Duration // saturated at every check this long: add workers
	ScaleDownAfter time.Duration // saturated at no check this long: remove one worker
	Cooldown       time.Duration // least time between two decisions
	Interval       time.Duration // how often saturation is checked (check_interval)
}

// Backoff decides when a crashed worker is restarted: at once when it had
// served, else after a delay that doubles from Min up to Max.
type Backoff struct {
	Min        time.Duration // first delay (doubles each crash)
	Max        time.Duration // largest delay
	ResetAfter time.Duration // in rotation this long -> the delay starts again from Min
	// MinUptime is how long a worker must have been in rotation for its
	// crash to count as one after serving, which restarts it at once.
	MinUptime time.Duration
	// QuickRestarts bounds the restarts at once per slot per minute; past
	// it the delay applies again. 0 = never restart at once.
	QuickRestarts int
}

// Output bounds the lines of a worker's stdout and stderr that corral
// logs: each worker process may log a burst of Burst lines, then
// LinesPerSecond a second (both streams together); lines beyond are
// dropped and counted. A line longer than 16 KiB is logged cut.
type Output struct {
	LinesPerSecond int // 0 = no bound
	Burst          int
}

// Queue bounds requests waiting for a free worker.
type Queue struct {
	Size    int           // waiting requests at most; 0 = no queue (503 at once when all are at max_inflight)
	Timeout time.Duration // longest wait before 503
}

// Health configures active health probes of each worker.
type Health struct {
	Type               string // "http" or "tcp"
	Path               string // HTTP path
	Host               string // Host header; "" = the worker's address
	Interval           time.Duration
	Timeout            time.Duration
	ExpectStatus       []int // accepted status codes; empty = any 2xx or 3xx
	HealthyThreshold   int   // consecutive passes to turn healthy
	UnhealthyThreshold int   // consecutive failures to turn unhealthy
	// RestartAfter restarts a worker that stayed unhealthy this long (liveness); 0 = never.
	RestartAfter time.Duration
}

// Passive configures outlier ejection from failures the proxy sees.
type Passive struct {
	Failures          int           // consecutive failures that eject; 0 = off
	Count5xx          bool          // 5xx answers count as failures
	BaseEjection      time.Duration // first ejection; grows with each repeated ejection
	MaxEjection       time.Duration // ejection never longer than this
	MaxEjectedPercent int           // never eject more than this share of the app's workers
}
