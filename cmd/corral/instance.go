package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/admin"
	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
	"github.com/corral-dev/corral/proxy"
)

// instance is one running corral: its apps, the public proxy, the admin API
// and the goroutine that serialises reloads. It implements the interfaces
// the admin API consumes.
type instance struct {
	log     hclog.Logger
	path    string
	started time.Time

	watcher *config.Watcher // nil in tests without one
	reaper  *pool.Reaper
	ports   *pool.Ports
	sockets *pool.Sockets // the private directory of socket workers, removed at shutdown
	proxy   *proxy.Proxy
	admin   *admin.Server // served only while admin.listen is set
	notify  *notifier     // systemd's notify socket; nil when not under systemd

	// state is replaced, never modified, by the reload goroutine (its only
	// writer); everyone else loads it.
	state atomic.Pointer[state]

	reloads      chan reloadRequest
	pings        chan chan struct{} // answered by the reload goroutine between reloads
	giveUp       chan error
	shuttingDown atomic.Bool
	lastReload   atomic.Pointer[admin.ReloadResult]

	// background owns goroutines that must end before shutdown returns:
	// servers, stops of removed apps, rolls started by signals.
	background sync.WaitGroup

	// removing holds the apps a reload removed whose stop still runs.
	// Shutdown stops them too: their workers' exits come through the
	// reaper, so they must be gone before the reaper ends.
	removingMu sync.Mutex
	removing   map[*pool.App]time.Duration // app -> its stop_timeout
}

// state is one applied configuration with the apps and listeners it runs.
type state struct {
	cfg      *config.Config
	apps     map[string]*pool.App
	public   net.Listener
	adminLn  net.Listener
	tlsOn    bool
	appOrder []string
}

type reloadRequest struct {
	trigger string
	reply   chan admin.ReloadResult
}

// start brings up a corral for cfg: listeners first (so a busy port fails
// fast, before any worker is spawned), then the apps, then serving.
// watcher (may be nil) is told which certificate files to watch.
// logs (may be nil) is the ring of recent log lines GET /logs serves, and
// notify (may be nil) is told about reloads.
func start(ctx context.Context, cfg *config.Config, log hclog.Logger, watcher *config.Watcher, logs *admin.LogRing, logOut *logOutput, notify *notifier) (*instance, error) {
	access, err := adminAccess(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Token != "" && os.Getenv("CORRAL_ADMIN_TOKEN") != "" {
		log.Named("admin").Info("CORRAL_ADMIN_TOKEN is set: the admin token of the config file is not used")
	}
	in := &instance{
		log:      log,
		notify:   notify,
		watcher:  watcher,
		path:     cfg.Path,
		started:  time.Now(),
		reaper:   pool.NewReaper(log),
		ports:    pool.NewPorts(cfg.WorkerPorts),
		sockets:  pool.NewSockets(""),
		proxy:    proxy.New(cfg.Proxy, log),
		reloads:  make(chan reloadRequest),
		pings:    make(chan chan struct{}),
		giveUp:   make(chan error, 1),
		removing: map[*pool.App]time.Duration{},
	}
	in.proxy.SetAccessLog(cfg.Log.Access)
	public, err := proxy.Listen(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	// The admin server exists even when admin.listen is "", so a reload that
	// turns it on only has to bind a listener.
	in.admin = admin.New(admin.Options{Runtime: in, Restarter: in, Scaler: in, WorkerRestarter: in, Metrics: in, Liveness: in,
		Logger: log, Version: version, Access: access, Logs: logs, LogLinesDropped: logOut.Dropped})
	var adminLn net.Listener
	if cfg.Admin.Listen != "" {
		if adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			public.Close()
			return nil, fmt.Errorf("listening on admin %s: %w", cfg.Admin.Listen, err)
		}
	}

	in.goBackground(func() { in.reaper.Run(ctx) })

	st := &state{cfg: cfg, apps: map[string]*pool.App{}, public: public, adminLn: adminLn, tlsOn: cfg.Proxy.TLS != nil}
	for _, spec := range cfg.Apps {
		a := pool.New(spec, in.poolOptions())
		a.Start()
		st.apps[spec.Name] = a
	}
	st.appOrder = appNames(cfg)
	in.proxy.SetApps(servedApps(cfg.Apps), tableSources(st.apps))
	in.state.Store(st)
	in.watchFiles(cfg)
	in.servePublic(public, st.tlsOn)
	in.serveAdmin(adminLn)
	in.goBackground(func() { in.runReloads(ctx) })
	first := admin.ReloadResult{At: in.started, Trigger: admin.TriggerStart, Applied: true, Changes: describeStart(cfg)}
	in.lastReload.Store(&first)
	in.admin.ObserveReload(first)
	log.Info("corral started", "version", version, "listen", cfg.Listen, "admin", cfg.Admin.Listen,
		"config", cfg.Path, "apps", describeStart(cfg))
	return in, nil
}

func (in *instance) goBackground(f func()) {
	in.background.Add(1)
	go func() {
		defer in.background.Done()
		f()
	}()
}

func (in *instance) poolOptions() pool.Options {
	return pool.Options{
		Logger:      in.log,
		Ports:       in.ports,
		Sockets:     in.sockets,
		Reaper:      in.reaper,
		NewUpstream: in.proxy.NewUpstream,
		OnGiveUp: func(app string, err error) {
			select {
			case in.giveUp <- fmt.Errorf("app %s gave up: %w", app, err):
			default:
			}
		},
	}
}

func (in *instance) servePublic(ln net.Listener, tlsOn bool) {
	in.goBackground(func() {
		serve := in.proxy.Serve
		if tlsOn {
			serve = in.proxy.ServeTLS
		}
		if err := serve(ln); err != nil {
			in.log.Error("public listener stopped", "addr", ln.Addr().String(), "error", err)
		}
	})
}

// serveAdmin serves the admin API on ln (nil: admin.listen is "").
func (in *instance) serveAdmin(ln net.Listener) {
	if ln == nil {
		return
	}
	in.goBackground(func() {
		// Out of descriptors, the admin API waits like the public port,
		// with one log line instead of net/http's one a retry.
		if err := in.admin.Serve(proxy.PatientListener(ln, in.log.Named("admin"))); err != nil {
			in.log.Error("admin listener stopped", "addr", ln.Addr().String(), "error", err)
		}
	})
}

// servedApps leaves out the background apps (serve = false): the proxy
// routes to none of their workers.
func servedApps(apps []*config.App) []*config.App {
	out := make([]*config.App, 0, len(apps))
	for _, a := range apps {
		if !a.Background {
			out = append(out, a)
		}
	}
	return out
}

func tableSources(apps map[string]*pool.App) map[string]proxy.TableSource {
	m := make(map[string]proxy.TableSource, len(apps))
	for name, a := range apps {
		m[name] = a
	}
	return m
}

func appNames(cfg *config.Config) []string {
	names := make([]string, len(cfg.Apps))
	for i, a := range cfg.Apps {
		names[i] = a.Name
	}
	return names
}

func describeStart(cfg *config.Config) string {
	s := ""
	for i, a := range cfg.Apps {
		if i > 0 {
			s += "; "
		}
		s += fmt.Sprintf("%s: %d instances", a.Name, a.Instances)
	}
	return s
}

// Reload asks the reload goroutine to load and apply the config file and
// waits for the outcome.
func (in *instance) Reload(ctx context.Context, trigger string) admin.ReloadResult {
	req := reloadRequest{trigger: trigger, reply: make(chan admin.ReloadResult, 1)}
	select {
	case in.reloads <- req:
	case <-ctx.Done():
		return admin.ReloadResult{At: time.Now(), Trigger: trigger, Error: "reload not started: " + ctx.Err().Error()}
	}
	select {
	case res := <-req.reply:
		return res
	case <-ctx.Done():
		return admin.ReloadResult{At: time.Now(), Trigger: trigger, Error: "reload still running: " + ctx.Err().Error()}
	}
}

// runReloads is the one goroutine that applies configs, so reloads from the
// file watcher, SIGHUP and the admin API never interleave.
func (in *instance) runReloads(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-in.reloads:
			in.notify.reloading()
			res := in.reload(ctx, req.trigger)
			in.notify.reloaded(res)
			in.lastReload.Store(&res)
			in.admin.ObserveReload(res)
			req.reply <- res
		case reply := <-in.pings:
			close(reply)
		}
	}
}

// pingReloads waits until the reload goroutine is between reloads. It is
// the goroutine's heartbeat, and shutdown's barrier: once it answers after
// shuttingDown is set, no reload is applying and none will.
func (in *instance) pingReloads(ctx context.Context) error {
	reply := make(chan struct{})
	select {
	case in.pings <- reply:
	case <-ctx.Done():
		return fmt.Errorf("reload goroutine busy: %w", ctx.Err())
	}
	select {
	case <-reply:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("reload goroutine does not answer: %w", ctx.Err())
	}
}

// reload loads the file and applies only what changed. A config that does
// not load changes nothing; listeners are bound before anything else is
// touched, so a busy new address also changes nothing.
func (in *instance) reload(ctx context.Context, trigger string) admin.ReloadResult {
	res := admin.ReloadResult{At: time.Now(), Trigger: trigger}
	if in.shuttingDown.Load() {
		res.Error = "shutting down"
		return res
	}
	// Every trigger rereads the certificate, whatever the config says: a
	// renewal replaces the files and leaves config.hcl as it was.
	in.rereadCertificate(in.state.Load().cfg.Proxy)
	cfg, err := config.Load(in.path)
	if err != nil {
		var problems config.Problems
		if errors.As(err, &problems) {
			for _, p := range problems {
				res.Problems = append(res.Problems, p.String())
			}
		} else {
			res.Error = err.Error()
		}
		in.log.Error("config rejected; keeping the running config", "trigger", trigger, "error", err)
		return res
	}
	old := in.state.Load()
	diff := config.Compare(old.cfg, cfg)
	res.Changes = diff.String()
	if diff.Empty() {
		res.Applied = true
		in.log.Info("config unchanged", "trigger", trigger)
		resetScales(old.apps, nil)
		return res
	}

	next := &state{cfg: cfg, apps: make(map[string]*pool.App, len(cfg.Apps)), public: old.public, adminLn: old.adminLn, tlsOn: cfg.Proxy.TLS != nil}
	rebindPublic := diff.ListenChanged || next.tlsOn != old.tlsOn || (diff.ProxyChanged && !sameTLS(old.cfg.Proxy.TLS, cfg.Proxy.TLS))
	var public, adminSwap *listenerSwap
	if rebindPublic {
		public = &listenerSwap{what: "public", old: old.public, addr: cfg.Listen}
	}
	if diff.AdminChanged {
		adminSwap = &listenerSwap{what: "admin", old: old.adminLn, addr: cfg.Admin.Listen}
	}
	if err := bindSwaps(public, adminSwap); err != nil {
		res.Error = err.Error()
		if lost := in.undoSwaps(old, public, adminSwap); lost != nil {
			res.Error += "; " + lost.Error()
			in.log.Error("config not applied, and a listener of the running config is lost", "trigger", trigger, "error", res.Error)
			return res
		}
		in.log.Error("config not applied; keeping the running config", "trigger", trigger, "error", err)
		return res
	}
	if public != nil {
		next.public = public.ln
	}
	if adminSwap != nil {
		next.adminLn = adminSwap.ln
	}

	if diff.AccessChanged || diff.AdminChanged {
		// adminAccess cannot fail here: the token from the environment was
		// checked at start, and the file's by Load.
		access, _ := adminAccess(cfg)
		in.admin.SetAccess(access)
	}
	if diff.LogChanged {
		in.log.SetLevel(hclog.LevelFromString(cfg.Log.Level))
		in.proxy.SetAccessLog(cfg.Log.Access)
		if cfg.Log.Format != old.cfg.Log.Format {
			in.log.Warn("log format changes take effect when corral restarts", "format", cfg.Log.Format)
		}
	}
	if diff.ProxyChanged {
		in.proxy.SetSettings(cfg.Proxy)
		if cfg.WorkerPorts != old.cfg.WorkerPorts {
			in.log.Warn("worker_ports changes take effect when corral restarts")
		}
	}

	removed := map[string]bool{}
	for _, name := range diff.Removed {
		removed[name] = true
	}
	for name, a := range old.apps {
		if !removed[name] {
			next.apps[name] = a
		}
	}
	for _, name := range diff.Added {
		a := pool.New(appSpec(cfg, name), in.poolOptions())
		a.Start()
		next.apps[name] = a
	}
	updated := map[string]bool{}
	for _, ch := range diff.Changed {
		next.apps[ch.Name].Update(appSpec(cfg, ch.Name))
		updated[ch.Name] = true
	}
	resetScales(next.apps, updated)
	next.appOrder = appNames(cfg)

	// Routing switches before removed apps stop, so no new request reaches them.
	in.proxy.SetApps(servedApps(cfg.Apps), tableSources(next.apps))
	in.state.Store(next)

	for _, name := range diff.Removed {
		a := old.apps[name]
		in.removingMu.Lock()
		in.removing[a] = appSpec(old.cfg, name).StopTimeout
		in.removingMu.Unlock()
		in.goBackground(func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), appStopBound(old.cfg, name))
			defer cancel()
			if err := a.Stop(stopCtx); err != nil {
				in.log.Warn("stopping removed app", "app", name, "error", err)
			}
			in.removingMu.Lock()
			delete(in.removing, a)
			in.removingMu.Unlock()
		})
	}
	if next.public != old.public {
		in.servePublic(next.public, next.tlsOn)
		// Closing the old listener stops new connections only; requests
		// already accepted there finish. (It may be closed already, when
		// the new address shares its port.)
		old.public.Close()
	}
	if next.adminLn != old.adminLn {
		in.serveAdmin(next.adminLn)
		if old.adminLn != nil {
			old.adminLn.Close()
		}
	}
	in.watchFiles(cfg)
	res.Applied = true
	in.log.Info("config reloaded", "trigger", trigger, "changes", res.Changes)
	return res
}

// listenerSwap is one listener a reload moves to a new address.
type listenerSwap struct {
	what string       // "public" or "admin", for messages
	old  net.Listener // the running one; nil when admin.listen was ""
	addr string       // the new address; "" turns the admin listener off

	ln        net.Listener // bound by bind
	closedOld bool         // old was closed to free the port for ln
}

// bind binds the new address beside the old listener. When that fails
// because the old listener holds the same port (127.0.0.1:P -> 0.0.0.0:P,
// 127.0.0.1:P -> localhost:P, or the same address with new TLS settings),
// the old listener is closed first; undo binds it again if the reload
// fails later.
func (s *listenerSwap) bind() error {
	if s.addr == "" {
		return nil
	}
	ln, err := proxy.Listen(s.addr)
	if err != nil && s.old != nil && errors.Is(err, syscall.EADDRINUSE) && samePort(s.old.Addr().String(), s.addr) {
		s.old.Close()
		s.closedOld = true
		ln, err = proxy.Listen(s.addr)
	}
	if err != nil {
		return fmt.Errorf("listening on %s %s: %w", s.what, s.addr, err)
	}
	s.ln = ln
	return nil
}

// bindSwaps binds every swap (nil ones are skipped) and stops at the first
// failure.
func bindSwaps(swaps ...*listenerSwap) error {
	for _, s := range swaps {
		if s == nil {
			continue
		}
		if err := s.bind(); err != nil {
			return err
		}
	}
	return nil
}

// undoSwaps closes what a failed reload bound and serves again, on its own
// address, every running listener that was closed to free its port, so the
// running config keeps serving. The error names a listener that could not
// be bound again (someone else took the port in between).
func (in *instance) undoSwaps(old *state, public, adminSwap *listenerSwap) error {
	restored := *old
	var lost []error
	for _, s := range []*listenerSwap{public, adminSwap} {
		if s == nil {
			continue
		}
		if s.ln != nil {
			s.ln.Close()
		}
		if !s.closedOld {
			continue
		}
		addr := s.old.Addr().String()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			lost = append(lost, fmt.Errorf("%s listener %s closed and not bound again: %w", s.what, addr, err))
			continue
		}
		if s == public {
			restored.public = ln
			in.servePublic(ln, old.tlsOn)
		} else {
			restored.adminLn = ln
			in.serveAdmin(ln)
		}
	}
	in.state.Store(&restored)
	return errors.Join(lost...)
}

// samePort reports whether two listen addresses name the same TCP port.
func samePort(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil {
		return false
	}
	na, errA := net.LookupPort("tcp", pa)
	nb, errB := net.LookupPort("tcp", pb)
	return errA == nil && errB == nil && na == nb
}

// rereadCertificate makes the proxy read the certificate files of settings
// again for the next handshake, if they load; when they do not, the
// certificate being served stays.
func (in *instance) rereadCertificate(settings config.Proxy) {
	if settings.TLS == nil {
		return
	}
	pair, err := tls.LoadX509KeyPair(settings.TLS.Cert, settings.TLS.Key)
	if err != nil {
		in.log.Warn("tls certificate files do not load; serving the current certificate", "cert", settings.TLS.Cert, "error", err)
		return
	}
	in.proxy.SetSettings(settings)
	if leaf := pair.Leaf; leaf != nil {
		in.log.Info("tls certificate read", "cert", settings.TLS.Cert, "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	}
}

// watchFiles has the config watcher watch the certificate files and the
// token file too, so a renewal or a rotated Secret reloads without a signal.
func (in *instance) watchFiles(cfg *config.Config) {
	if in.watcher == nil {
		return
	}
	var files []string
	if t := cfg.Proxy.TLS; t != nil {
		files = append(files, t.Cert, t.Key)
	}
	if cfg.Admin.TokenFile != "" {
		files = append(files, cfg.Admin.TokenFile)
	}
	in.watcher.AlsoWatch(files...)
}

// adminAccess is who may use the admin API under cfg. $CORRAL_ADMIN_TOKEN,
// when set, is the token, whatever the file says: it is how a Kubernetes
// Secret or an env file reaches corral, and the CLI looks there first too.
func adminAccess(cfg *config.Config) (admin.Access, error) {
	token := cfg.Admin.Token
	if env := os.Getenv("CORRAL_ADMIN_TOKEN"); env != "" {
		if err := config.CheckToken(env); err != nil {
			return admin.Access{}, fmt.Errorf("CORRAL_ADMIN_TOKEN: %w", err)
		}
		token = env
	}
	return admin.Access{Listen: cfg.Admin.Listen, Token: token, Hosts: cfg.Admin.Hosts}, nil
}

func sameTLS(a, b *config.TLS) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func appSpec(cfg *config.Config, name string) *config.App {
	for _, a := range cfg.Apps {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// appStopBound is how long stopping an app may take: its drain bound and
// its stop timeout, plus a margin for the SIGKILL and the reap.
func appStopBound(cfg *config.Config, name string) time.Duration {
	if spec := appSpec(cfg, name); spec != nil {
		return spec.DrainTimeout + spec.StopTimeout + 5*time.Second
	}
	return 35 * time.Second
}

// Status implements admin.Runtime.
func (in *instance) Status() admin.Status {
	st := in.state.Load()
	s := admin.Status{
		Version:      version,
		PID:          os.Getpid(),
		StartedAt:    in.started,
		Config:       in.path,
		Listen:       st.cfg.Listen,
		ShuttingDown: in.shuttingDown.Load(),
		LastReload:   in.lastReload.Load(),
	}
	for _, name := range st.appOrder {
		s.Apps = append(s.Apps, st.apps[name].Status())
	}
	return s
}

// resetScales ends the runtime scale of every app in apps that Update did
// not already reset (updated): a reload restores the file's instances.
func resetScales(apps map[string]*pool.App, updated map[string]bool) {
	for name, a := range apps {
		if !updated[name] {
			a.ResetScale()
		}
	}
}

// Scale implements admin.Scaler: a runtime scale of one app.
func (in *instance) Scale(app string, n int) (admin.ScaleResult, error) {
	a := in.state.Load().apps[app]
	if a == nil {
		return admin.ScaleResult{}, fmt.Errorf("scaling %s: %w", app, admin.ErrUnknownApp)
	}
	prev, err := a.Scale(n)
	if errors.Is(err, pool.ErrOutOfBounds) {
		return admin.ScaleResult{}, fmt.Errorf("%w: %w", admin.ErrOutOfBounds, err)
	}
	if err != nil {
		return admin.ScaleResult{}, err
	}
	st := a.Status()
	return admin.ScaleResult{App: app, Instances: n, Previous: prev, Configured: st.Configured,
		Autoscale: st.Autoscale != nil}, nil
}

// RestartWorker implements admin.WorkerRestarter: the zero-downtime
// replace of one worker, found by its slot id among the apps whose name it
// starts with.
func (in *instance) RestartWorker(ctx context.Context, id string) error {
	st := in.state.Load()
	for _, name := range st.appOrder {
		if !strings.HasPrefix(id, name+"-") {
			continue
		}
		err := st.apps[name].RestartWorker(ctx, id)
		if !errors.Is(err, pool.ErrUnknownWorker) {
			return err
		}
	}
	return fmt.Errorf("restarting %s: %w", id, admin.ErrUnknownWorker)
}

// Restart implements admin.Restarter: a rolling restart of one app.
func (in *instance) Restart(ctx context.Context, app string) error {
	a := in.state.Load().apps[app]
	if a == nil {
		return fmt.Errorf("restarting %s: %w", app, admin.ErrUnknownApp)
	}
	return a.Restart(ctx)
}

// restartAll rolls every app at once (SIGUSR2); each app rolls within its
// own surge, so capacity never dips.
func (in *instance) restartAll(ctx context.Context) {
	st := in.state.Load()
	in.log.Info("rolling restart of every app", "apps", len(st.apps))
	for name, a := range st.apps {
		in.goBackground(func() {
			if err := a.Restart(ctx); err != nil {
				in.log.Error("rolling restart failed; old workers keep serving", "app", name, "error", err)
				return
			}
			in.log.Info("rolling restart done", "app", name)
		})
	}
}

// Alive implements admin.Liveness: the reload goroutine and the supervisor
// of every app (also removed apps still stopping) answer before ctx ends.
// The apps are asked at once, so one stuck app does not hide the others.
func (in *instance) Alive(ctx context.Context) error {
	apps, _ := in.appsToStop()
	errs := make([]error, len(apps)+1)
	var wg sync.WaitGroup
	for i, a := range apps {
		wg.Go(func() { errs[i] = a.Alive(ctx) })
	}
	errs[len(apps)] = in.pingReloads(ctx)
	wg.Wait()
	return errors.Join(errs...)
}

var _ admin.ProxyMetrics = (*instance)(nil)

// ProxySnapshot implements admin.ProxyMetrics.
func (in *instance) ProxySnapshot() admin.ProxyStats {
	c, b := in.proxy.ConnStats(), in.proxy.BufferStats()
	return admin.ProxyStats{
		Connections: admin.ClientConnections{Open: c.Open, Parked: c.Parked, Limit: c.Limit, LimitWaits: c.LimitWaits,
			DescriptorWaits: c.DescriptorWaits},
		BufferMemoryBytes: b.MemoryBytes, BufferDiskBytes: b.DiskBytes, BufferStagingBytes: b.StagingBytes,
		BufferFiles: b.Files, BufferedResponses: b.Spooled, SpilledResponses: b.Spilled,
	}
}

// MetricsSnapshot implements admin.Metrics.
func (in *instance) MetricsSnapshot() []admin.AppMetrics {
	st := in.state.Load()
	out := make([]admin.AppMetrics, 0, len(st.apps))
	for _, name := range st.appOrder {
		a := st.apps[name]
		stats, workers := a.Stats()
		out = append(out, admin.AppMetrics{Name: name, Stats: stats, Workers: workers, Status: a.Status()})
	}
	return out
}

// shutdown stops corral gracefully within ctx (shutdown.timeout). This is
// the one place the order lives:
//
//  1. /readyz turns 503 (load balancers stop sending new traffic) and the
//     reload goroutine finishes any reload under way (no reload starts later);
//  2. the pre-stop delay keeps serving while load balancers notice;
//  3. the proxy stops accepting, closes idle connections and waits for
//     in-flight requests and long-lived streams (WebSockets, SSE) until the
//     drain deadline (drainDeadline), then closes what is left, so every app
//     still has its stop_timeout before ctx ends;
//  4. every app, including apps a reload removed that are still stopping,
//     sends the stop signal to each worker's process group and SIGKILLs it
//     after stop_timeout, or at once when ctx is done;
//  5. the socket directory of socket workers is removed (every worker is
//     gone, and their socket files with them);
//  6. the admin API stops (it answers /healthz and /readyz until here);
//  7. the caller cancels the root context, which ends the reaper and the
//     reload goroutine, and waits for background goroutines.
func (in *instance) shutdown(ctx context.Context) {
	in.shuttingDown.Store(true)
	if err := in.pingReloads(ctx); err != nil {
		in.log.Warn("a reload is still running at shutdown", "error", err)
	}
	st := in.state.Load()
	if d := st.cfg.Shutdown.PreStopDelay; d > 0 {
		in.log.Info("pre-stop delay: still serving", "delay", d)
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}

	apps, stopTime := in.appsToStop()
	drainCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		drainCtx, cancel = context.WithDeadline(ctx, drainDeadline(time.Now(), deadline, stopTime))
		defer cancel()
	}
	in.log.Info("shutting down: draining requests", "stop_time", stopTime)
	if err := in.proxy.Shutdown(drainCtx); err != nil {
		in.log.Warn("requests and streams still open at the drain deadline were closed", "error", err)
	}

	in.log.Info("stopping workers")
	var wg sync.WaitGroup
	for _, a := range apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Stop(ctx); err != nil {
				in.log.Warn("stopping app", "app", a.Name(), "error", err)
			}
		}()
	}
	wg.Wait()
	if err := in.sockets.Close(); err != nil {
		in.log.Warn("cannot remove the socket directory", "error", err)
	}
	adminCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	in.admin.Shutdown(adminCtx)
	cancel()
}

// killMargin is kept after the longest stop_timeout for the SIGKILL and
// the reap that follow it.
const killMargin = time.Second

// drainDeadline is when the proxy's drain must end so that workers still
// get stopTime (their longest stop_timeout plus killMargin) before
// deadline. The drain is never cut below a quarter of what remains: with
// stop_timeout at or above shutdown.timeout (the defaults are 30 s and
// 25 s), requests in flight still get time to finish and workers get the
// rest.
func drainDeadline(now, deadline time.Time, stopTime time.Duration) time.Time {
	remaining := deadline.Sub(now)
	drain := remaining - stopTime - killMargin
	if floor := remaining / 4; drain < floor {
		drain = floor
	}
	return now.Add(drain)
}

// appsToStop returns every app shutdown must stop, those of the running
// config and those a reload removed that are still stopping (Stop may be
// called twice; the second call bounds the first by the shutdown deadline),
// and the longest stop_timeout among them.
func (in *instance) appsToStop() ([]*pool.App, time.Duration) {
	st := in.state.Load()
	apps := make([]*pool.App, 0, len(st.apps))
	var longest time.Duration
	for _, spec := range st.cfg.Apps {
		apps = append(apps, st.apps[spec.Name])
		longest = max(longest, spec.StopTimeout)
	}
	in.removingMu.Lock()
	for a, stopTimeout := range in.removing {
		apps = append(apps, a)
		longest = max(longest, stopTimeout)
	}
	in.removingMu.Unlock()
	return apps, longest
}
