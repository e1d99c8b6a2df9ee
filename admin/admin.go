// Package admin serves corral's admin API on admin.listen: status JSON,
// Prometheus metrics, health and readiness, config reload, rolling restarts
// and a human dashboard. It also holds the client side the CLI uses.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/corral-dev/corral/pool"
)

// ErrUnknownApp is returned (wrapped) by a Restarter asked to roll an app
// the running config does not have.
var ErrUnknownApp = errors.New("unknown app")

// ErrUnknownWorker is returned (wrapped) by a WorkerRestarter asked to
// replace a worker id no app has.
var ErrUnknownWorker = errors.New("unknown worker")

// Reload triggers, as recorded in ReloadResult.Trigger.
const (
	TriggerFile   = "file"
	TriggerSignal = "signal"
	TriggerAPI    = "api"
	TriggerCLI    = "cli"
	TriggerStart  = "start"
)

// Status is the body of GET /status.
type Status struct {
	Version      string           `json:"version"`
	PID          int              `json:"pid"`
	StartedAt    time.Time        `json:"started_at"`
	Config       string           `json:"config"` // path
	Listen       string           `json:"listen"`
	ShuttingDown bool             `json:"shutting_down"`
	LastReload   *ReloadResult    `json:"last_reload,omitempty"`
	Apps         []pool.AppStatus `json:"apps"`
}

// ReloadResult is the outcome of one reload.
type ReloadResult struct {
	At       time.Time `json:"at"`
	Trigger  string    `json:"trigger"`            // "file", "signal", "api", "cli", "start"
	Applied  bool      `json:"applied"`            // false when invalid (or failed to apply)
	Changes  string    `json:"changes,omitempty"`  // config.Diff.String() e.g. "web: 2 -> 4 instances"
	Problems []string  `json:"problems,omitempty"` // "config.hcl:12:3: app.web.instances: must be at least 1"
	Error    string    `json:"error,omitempty"`
}

// Runtime is the running corral instance as the admin API sees it.
type Runtime interface {
	// Status returns a snapshot of the instance; it is called per request.
	Status() Status
	// Reload loads and applies the config file now and reports the outcome.
	Reload(ctx context.Context, trigger string) ReloadResult
}

// Restarter rolls one app.
type Restarter interface {
	// Restart does a zero-downtime rolling restart of app and returns when it
	// is done; it returns ErrUnknownApp (wrapped) for unknown names.
	Restart(ctx context.Context, app string) error
}

// Scaler changes an app's instances at runtime.
type Scaler interface {
	// Scale sets app's instances to n until the next reload of the config
	// file; it returns ErrUnknownApp (wrapped) for unknown names.
	Scale(app string, n int) (ScaleResult, error)
}

// WorkerRestarter replaces one worker.
type WorkerRestarter interface {
	// RestartWorker replaces worker id the zero-downtime way and returns
	// when it is done; it returns ErrUnknownWorker (wrapped) for unknown ids.
	RestartWorker(ctx context.Context, id string) error
}

// Liveness is the supervisor's heartbeat behind /healthz.
type Liveness interface {
	// Alive returns nil when every supervising goroutine answered before
	// ctx ended, else an error naming the one that did not.
	Alive(ctx context.Context) error
}

// Metrics gives the counters behind /metrics.
type Metrics interface {
	// MetricsSnapshot is called once per scrape, never on the request path.
	MetricsSnapshot() []AppMetrics
}

// ProxyMetrics is optional beside Metrics: the public proxy's own figures
// (client connections, buffers for slow clients), for a scrape.
type ProxyMetrics interface {
	ProxySnapshot() ProxyStats
}

// ProxyStats are the proxy's own gauges and counters.
type ProxyStats struct {
	Connections ClientConnections

	BufferMemoryBytes  int64 // response spools and held request bodies in memory
	BufferDiskBytes    int64 // bytes in temporary files not yet sent
	BufferStagingBytes int64 // blocks staging writes to temporary files
	BufferFiles        int64 // temporary files open
	BufferedResponses  int64 // responses read ahead of their client (counter)
	SpilledResponses   int64 // of which some part went to disk (counter)
}

// ClientConnections are the public listeners' client connection counts.
type ClientConnections struct {
	Open       int    // open client connections, idle ones included
	Parked     int    // idle HTTP/1.1 connections waiting between requests
	Limit      int    // the cap on open connections
	LimitWaits uint64 // accepts that waited at the cap
	// DescriptorWaits are accepts that waited for a free file descriptor.
	DescriptorWaits uint64
}

// AppMetrics are one app's counters and status for a scrape.
type AppMetrics struct {
	Name    string
	Stats   *pool.AppStats
	Workers map[string]*pool.WorkerStats // slot id -> counters (including scaled-down slots)
	Status  pool.AppStatus
}

// Options configure a Server.
type Options struct {
	// Runtime is required.
	Runtime Runtime
	// Restarter is optional; without it restart answers 501.
	Restarter Restarter
	// Scaler is optional; without it scale answers 501.
	Scaler Scaler
	// WorkerRestarter is optional; without it a worker restart answers 501.
	WorkerRestarter WorkerRestarter
	// Metrics is optional; without it /metrics has only process and reload metrics.
	Metrics Metrics
	// Liveness is optional; without it /healthz answers 200 while the
	// admin listener serves.
	Liveness Liveness
	// Logger is the root logger; the server logs under the name "admin".
	Logger hclog.Logger
	// Version is shown in build_info and used when Status has none.
	Version string
	// Access is the token, host names and listen address the API starts
	// with; SetAccess replaces it.
	Access Access
	// Logs is optional; without it GET /logs answers 501.
	Logs *LogRing
	// LogLinesDropped is optional: how many of corral's log lines its
	// output (stderr) did not take, for corral_log_lines_dropped_total.
	LogLinesDropped func() uint64
}

// Timeouts of the admin listener. There is no write timeout: a restart
// request waits for the whole roll.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
)

// healthzTimeout bounds the heartbeat behind /healthz: an answer must come
// within a liveness probe's timeout (1 s by default in Kubernetes).
const healthzTimeout = 500 * time.Millisecond

// Server is the admin API. Create it with New, serve it with Serve and stop
// it with Shutdown.
type Server struct {
	opts     Options
	log      hclog.Logger
	handler  http.Handler
	registry *prometheus.Registry
	reloads  *reloadMetrics
	http     *http.Server
	access   atomic.Pointer[access]

	// work bounds what admin requests start that must not stop when the
	// client hangs up (rolls, reloads); Shutdown cancels it.
	work       context.Context
	cancelWork context.CancelFunc
	// mu guards closed so that no roll is added to running once Shutdown
	// has started waiting for it.
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup

	// hist is the dashboard's ring of samples (history.go), filled by a
	// sampler that the first Serve starts and Shutdown stops.
	hist        history
	historyOnce sync.Once
	historyDone sync.WaitGroup
}

// errShuttingDown refuses rolling restarts asked for during Shutdown.
var errShuttingDown = errors.New("admin api is shutting down")

// New builds a Server with its router and metrics registry.
func New(opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("admin")
	s := &Server{opts: opts, log: log, hist: history{size: historySize, every: historyInterval}}
	s.SetAccess(opts.Access)
	s.work, s.cancelWork = context.WithCancel(context.Background())
	s.registry, s.reloads = newRegistry(opts.Metrics, opts.Version)
	if opts.LogLinesDropped != nil {
		s.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "corral_log_lines_dropped_total",
			Help: "Lines of corral's log (its own and its workers' output) dropped because its output (stderr) did not take them.",
		}, func() float64 { return float64(opts.LogLinesDropped()) }))
	}
	s.handler = s.routes()
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return s
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	// HEAD /healthz and /readyz are what some load balancers send.
	// authorize guards every method but GET and HEAD, and /logs: a route
	// added later is guarded without a word.
	r.Use(s.traceRequests, middleware.GetHead, s.checkHost, sameOrigin, s.authorize)
	r.Get("/", s.dashboard)
	r.Get("/status", s.status)
	r.Get("/history", s.historyHandler)
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog:      s.log.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Warn}),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Get("/logs", s.logs)
	r.Post("/reload", s.reload)
	r.Post("/apps/{app}/restart", s.restart)
	r.Post("/apps/{app}/scale", s.scale)
	r.Post("/workers/{id}/restart", s.restartWorker)
	return r
}

// Handler returns the admin router, for tests and for embedding.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers admin requests on ln until Shutdown or until the caller
// closes ln (as when a reload moves admin.listen); both return nil. It may
// run on several listeners at once.
func (s *Server) Serve(ln net.Listener) error {
	s.startHistory()
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("serving admin api: %w", err)
	}
	return nil
}

// Shutdown stops accepting, cancels rolling restarts started with
// ?wait=false and waits for open requests and those restarts until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	// Cancel work first: a waiting restart request would otherwise hold
	// http.Server.Shutdown until the roll finishes.
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancelWork()
	err := s.http.Shutdown(ctx)
	done := make(chan struct{})
	go func() {
		s.running.Wait()
		s.historyDone.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		return fmt.Errorf("shutting down admin api: %w", err)
	}
	return nil
}

// ObserveReload counts one reload outcome for metrics. The admin server does
// not call it itself, so the caller reports every reload exactly once
// whatever triggered it.
func (s *Server) ObserveReload(r ReloadResult) { s.reloads.observe(r) }

// traceRequests logs each admin request at trace level only: scrapers and
// the dashboard poll, so anything louder would drown the log.
func (s *Server) traceRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.IsTrace() {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		s.log.Trace("request", "method", r.Method, "path", r.URL.Path, "status", ww.Status(), "duration", time.Since(start))
	})
}

// sameOrigin refuses state-changing requests sent by a browser from another
// origin: the admin port is on loopback, so any web page the operator opens
// could otherwise POST /reload to it. Clients that send no Origin (the CLI,
// curl) pass.
func sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if origin := r.Header.Get("Origin"); origin != "" {
				u, err := url.Parse(origin)
				if err != nil || u.Host != r.Host {
					http.Error(w, "cross-origin request refused", http.StatusForbidden)
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// snapshot returns the runtime's status with the fields the JSON shape
// promises filled in (non-null lists, a version).
func (s *Server) snapshot() Status {
	st := s.opts.Runtime.Status()
	if st.Version == "" {
		st.Version = s.opts.Version
	}
	if st.Apps == nil {
		st.Apps = []pool.AppStatus{}
	}
	for i := range st.Apps {
		if st.Apps[i].Workers == nil {
			st.Apps[i].Workers = []pool.WorkerStatus{}
		}
	}
	return st
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.snapshot())
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.opts.Liveness != nil {
		ctx, cancel := context.WithTimeout(r.Context(), healthzTimeout)
		defer cancel()
		if err := s.opts.Liveness.Alive(ctx); err != nil {
			s.log.Warn("liveness check failed", "error", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not alive: %v\n", err)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	st := s.opts.Runtime.Status()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if st.ShuttingDown {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
		return
	}
	if unready := UnreadyApps(st); len(unready) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "no ready worker: %s\n", strings.Join(unready, ", "))
		return
	}
	fmt.Fprintln(w, "ready")
}

// UnreadyApps names the apps of st without a ready worker (a background
// app is ready once its worker stays up): /readyz is 200 when there is
// none, and so is systemd's READY=1.
func UnreadyApps(st Status) []string {
	var unready []string
	for _, a := range st.Apps {
		if a.Ready < 1 {
			unready = append(unready, a.Name)
		}
	}
	return unready
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	// Not the request's context: a reload that rolls changed apps must not
	// stop half-way because curl was interrupted.
	res := s.opts.Runtime.Reload(s.work, TriggerAPI)
	code := http.StatusOK
	switch {
	case res.Applied:
	case len(res.Problems) > 0:
		code = http.StatusUnprocessableEntity
	default:
		code = http.StatusInternalServerError
	}
	s.writeJSON(w, code, res)
}

// RestartResult is the body of POST /apps/{app}/restart.
type RestartResult struct {
	App    string `json:"app"`
	Result string `json:"result"` // "done", "started" (wait=false) or "failed"
	Error  string `json:"error,omitempty"`
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	app := chi.URLParam(r, "app")
	if s.opts.Restarter == nil {
		s.writeJSON(w, http.StatusNotImplemented, RestartResult{App: app, Result: "failed", Error: "restart not supported"})
		return
	}
	if !s.hasApp(app) {
		s.writeJSON(w, http.StatusNotFound, RestartResult{App: app, Result: "failed", Error: ErrUnknownApp.Error()})
		return
	}
	wait := waitParam(r)
	done, err := s.startWork(func(ctx context.Context) error { return s.opts.Restarter.Restart(ctx, app) },
		"rolling restart", "app", app)
	if err != nil {
		s.writeJSON(w, http.StatusServiceUnavailable, RestartResult{App: app, Result: "failed", Error: err.Error()})
		return
	}
	if !wait {
		s.writeJSON(w, http.StatusAccepted, RestartResult{App: app, Result: "started"})
		return
	}
	// A client that hangs up does not cancel the roll: stopping a roll
	// half-way helps nobody, and it stays bounded by Shutdown.
	select {
	case err := <-done:
		switch {
		case err == nil:
			s.writeJSON(w, http.StatusOK, RestartResult{App: app, Result: "done"})
		case errors.Is(err, ErrUnknownApp):
			s.writeJSON(w, http.StatusNotFound, RestartResult{App: app, Result: "failed", Error: err.Error()})
		default:
			s.writeJSON(w, http.StatusConflict, RestartResult{App: app, Result: "failed", Error: err.Error()})
		}
	case <-r.Context().Done():
	}
}

// startWork runs work (a roll, a worker restart) in the background under
// the server's work context and returns a channel that carries its
// outcome; it refuses once Shutdown has begun. what and the key/value pair
// name it in the log.
func (s *Server) startWork(work func(context.Context) error, what, key, value string) (<-chan error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errShuttingDown
	}
	done := make(chan error, 1)
	s.running.Add(1)
	go func() {
		defer s.running.Done()
		log := s.log.With(key, value)
		log.Info(what + " requested")
		err := work(s.work)
		if err != nil {
			log.Warn(what+" failed", "error", err)
		} else {
			log.Debug(what + " done")
		}
		done <- err
	}()
	return done, nil
}

// WorkerRestartResult is the body of POST /workers/{id}/restart.
type WorkerRestartResult struct {
	Worker string `json:"worker"`
	Result string `json:"result"` // "done", "started" (wait=false) or "failed"
	Error  string `json:"error,omitempty"`
}

func (s *Server) restartWorker(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	fail := func(code int, err error) {
		s.writeJSON(w, code, WorkerRestartResult{Worker: id, Result: "failed", Error: err.Error()})
	}
	if s.opts.WorkerRestarter == nil {
		fail(http.StatusNotImplemented, errors.New("worker restart not supported"))
		return
	}
	if !s.hasWorker(id) {
		fail(http.StatusNotFound, ErrUnknownWorker)
		return
	}
	done, err := s.startWork(func(ctx context.Context) error { return s.opts.WorkerRestarter.RestartWorker(ctx, id) },
		"worker restart", "worker", id)
	if err != nil {
		fail(http.StatusServiceUnavailable, err)
		return
	}
	if !waitParam(r) {
		s.writeJSON(w, http.StatusAccepted, WorkerRestartResult{Worker: id, Result: "started"})
		return
	}
	select {
	case err := <-done:
		switch {
		case err == nil:
			s.writeJSON(w, http.StatusOK, WorkerRestartResult{Worker: id, Result: "done"})
		case errors.Is(err, ErrUnknownWorker):
			fail(http.StatusNotFound, err)
		default:
			fail(http.StatusConflict, err)
		}
	case <-r.Context().Done():
	}
}

// ScaleRequest is the body of POST /apps/{app}/scale.
type ScaleRequest struct {
	Instances *int `json:"instances"`
}

// ScaleResult is the answer of POST /apps/{app}/scale.
type ScaleResult struct {
	App         string `json:"app"`
	Instances   int    `json:"instances"`       // desired now
	Previous    int    `json:"previous"`        // desired before
	Configured  int    `json:"configured"`      // the config file's instances
	RuntimeOnly bool   `json:"runtime_only"`    // always true: a reload restores Configured
	Note        string `json:"note,omitempty"`  // says so in words
	Autoscale   bool   `json:"autoscale"`       // autoscaling is on: it goes on from Instances
	Error       string `json:"error,omitempty"` // set when it failed
	Result      string `json:"result"`          // "applied" or "failed"
}

// maxScaleBody bounds the body of a scale request.
const maxScaleBody = 4 << 10

func (s *Server) scale(w http.ResponseWriter, r *http.Request) {
	app := chi.URLParam(r, "app")
	fail := func(code int, err error) {
		s.writeJSON(w, code, ScaleResult{App: app, Result: "failed", Error: err.Error()})
	}
	if s.opts.Scaler == nil {
		fail(http.StatusNotImplemented, errors.New("scale not supported"))
		return
	}
	if !s.hasApp(app) {
		fail(http.StatusNotFound, ErrUnknownApp)
		return
	}
	var req ScaleRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxScaleBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(http.StatusBadRequest, fmt.Errorf("body must be {\"instances\": N}: %w", err))
		return
	}
	if dec.More() {
		fail(http.StatusBadRequest, errors.New("body must be one JSON object"))
		return
	}
	if req.Instances == nil {
		fail(http.StatusBadRequest, errors.New("instances is required"))
		return
	}
	if n := *req.Instances; n < 1 || n > pool.MaxInstances {
		fail(http.StatusBadRequest, fmt.Errorf("instances must be in 1..%d, not %d", pool.MaxInstances, n))
		return
	}
	res, err := s.opts.Scaler.Scale(app, *req.Instances)
	switch {
	case errors.Is(err, ErrUnknownApp):
		fail(http.StatusNotFound, err)
		return
	case errors.Is(err, ErrOutOfBounds):
		fail(http.StatusBadRequest, err)
		return
	case err != nil:
		fail(http.StatusConflict, err)
		return
	}
	res.App, res.Result, res.RuntimeOnly = app, "applied", true
	res.Note = fmt.Sprintf("runtime only: the next reload of the config file restores instances = %d", res.Configured)
	if res.Autoscale {
		res.Note = "runtime only: autoscaling goes on from here within its bounds; a reload keeps the count, fitted to the file's bounds"
	}
	s.log.Info("scaled", "app", app, "instances", res.Instances, "previous", res.Previous)
	s.writeJSON(w, http.StatusOK, res)
}

// ErrOutOfBounds is returned (wrapped) by a Scaler asked for a count
// outside what the app allows (its autoscale bounds).
var ErrOutOfBounds = errors.New("instances out of bounds")

// waitParam reports whether the request waits for the outcome: yes unless
// ?wait=false or ?wait=0.
func waitParam(r *http.Request) bool {
	v := r.URL.Query().Get("wait")
	return v != "false" && v != "0"
}

func (s *Server) hasWorker(id string) bool {
	for _, a := range s.opts.Runtime.Status().Apps {
		for _, w := range a.Workers {
			if w.ID == id {
				return true
			}
		}
	}
	return false
}

func (s *Server) hasApp(name string) bool {
	for _, a := range s.opts.Runtime.Status().Apps {
		if a.Name == name {
			return true
		}
	}
	return false
}

func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		s.log.Debug("writing response failed", "error", err)
	}
}

// sortedKeys returns m's keys in order, so output is stable across scrapes.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
