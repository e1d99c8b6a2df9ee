package config

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// The raw* types are the file as written: gohcl decodes into them, every
// optional value is a pointer so that "absent" can get its default, and
// durations and other parsed values are still strings. Their hcl tags are
// also the source of the dotted keys Compare reports.

type rawFile struct {
	Listen      *string      `hcl:"listen,optional"`
	WorkerPorts *string      `hcl:"worker_ports,optional"`
	Admin       *rawAdmin    `hcl:"admin,block"`
	Log         *rawLog      `hcl:"log,block"`
	Proxy       *rawProxy    `hcl:"proxy,block"`
	Shutdown    *rawShutdown `hcl:"shutdown,block"`
	Apps        []*rawApp    `hcl:"app,block"`
}

type rawAdmin struct {
	Listen    *string  `hcl:"listen,optional"`
	Token     *string  `hcl:"token,optional"`
	TokenFile *string  `hcl:"token_file,optional"`
	Hosts     []string `hcl:"hosts,optional"`
}

type rawLog struct {
	Level  *string `hcl:"level,optional"`
	Format *string `hcl:"format,optional"`
	Access *bool   `hcl:"access,optional"`
}

type rawProxy struct {
	ReadHeaderTimeout     *string        `hcl:"read_header_timeout,optional"`
	ReadTimeout           *string        `hcl:"read_timeout,optional"`
	WriteTimeout          *string        `hcl:"write_timeout,optional"`
	IdleTimeout           *string        `hcl:"idle_timeout,optional"`
	MaxHeaderBytes        *int           `hcl:"max_header_bytes,optional"`
	MaxBodyBytes          hcl.Expression `hcl:"max_body_bytes,optional"` // a number or a size string
	MaxConnections        *int           `hcl:"max_connections,optional"`
	DialTimeout           *string        `hcl:"dial_timeout,optional"`
	ResponseHeaderTimeout *string        `hcl:"response_header_timeout,optional"`
	WorkerIdleTimeout     *string        `hcl:"worker_idle_timeout,optional"`
	TrustedProxies        []string       `hcl:"trusted_proxies,optional"`
	RequestID             *bool          `hcl:"request_id,optional"`
	H2C                   *bool          `hcl:"h2c,optional"`
	TLS                   *rawTLS        `hcl:"tls,block"`
	Buffering             *rawBuffering  `hcl:"buffering,block"`
}

type rawBuffering struct {
	RequestMemory  hcl.Expression `hcl:"request_memory,optional"`
	RequestDisk    hcl.Expression `hcl:"request_disk,optional"`
	ResponseMemory hcl.Expression `hcl:"response_memory,optional"`
	ResponseDisk   hcl.Expression `hcl:"response_disk,optional"`
	MemoryLimit    hcl.Expression `hcl:"memory_limit,optional"`
	DiskLimit      hcl.Expression `hcl:"disk_limit,optional"`
	Chunked        *bool          `hcl:"chunked,optional"`
	Dir            *string        `hcl:"dir,optional"`
}

type rawTLS struct {
	Cert *string `hcl:"cert,optional"`
	Key  *string `hcl:"key,optional"`
}

type rawShutdown struct {
	Timeout      *string `hcl:"timeout,optional"`
	PreStopDelay *string `hcl:"pre_stop_delay,optional"`
}

type rawApp struct {
	Name     string    `hcl:"name,label"`
	DefRange hcl.Range `hcl:",def_range"`

	Command []string          `hcl:"command,optional"`
	Dir     *string           `hcl:"dir,optional"`
	Env     map[string]string `hcl:"env,optional"`
	User    *string           `hcl:"user,optional"`
	Group   *string           `hcl:"group,optional"`

	Background *bool   `hcl:"serve,optional"` // serve = false
	SettleTime *string `hcl:"settle_time,optional"`

	Instances     *int          `hcl:"instances,optional"`
	StopSignal    *string       `hcl:"stop_signal,optional"`
	DrainTimeout  *string       `hcl:"drain_timeout,optional"`
	StopTimeout   *string       `hcl:"stop_timeout,optional"`
	StartTimeout  *string       `hcl:"start_timeout,optional"`
	Backoff       *rawBackoff   `hcl:"backoff,block"`
	Output        *rawOutput    `hcl:"output,block"`
	Surge         *int          `hcl:"surge,optional"`
	ExitOnFailure *string       `hcl:"exit_on_failure,optional"`
	Watch         []string      `hcl:"watch,optional"`
	WatchDebounce *string       `hcl:"watch_debounce,optional"`
	Recycle       *rawRecycle   `hcl:"recycle,block"`
	Autoscale     *rawAutoscale `hcl:"autoscale,block"`

	Health  *rawHealth  `hcl:"health,block"`
	Passive *rawPassive `hcl:"passive,block"`

	Hosts        []string  `hcl:"hosts,optional"`
	PathPrefix   *string   `hcl:"path_prefix,optional"`
	StripPrefix  *bool     `hcl:"strip_prefix,optional"`
	Balance      *string   `hcl:"balance,optional"`
	StickyCookie *string   `hcl:"sticky_cookie,optional"`
	MaxInflight  *int      `hcl:"max_inflight,optional"`
	Queue        *rawQueue `hcl:"queue,block"`
	Retries      *int      `hcl:"retries,optional"`
	RetryTimeout *string   `hcl:"retry_timeout,optional"`
}

type rawBackoff struct {
	Min           *string `hcl:"min,optional"`
	Max           *string `hcl:"max,optional"`
	ResetAfter    *string `hcl:"reset_after,optional"`
	MinUptime     *string `hcl:"min_uptime,optional"`
	QuickRestarts *int    `hcl:"quick_restarts,optional"`
}

type rawOutput struct {
	LinesPerSecond *int `hcl:"lines_per_second,optional"`
	Burst          *int `hcl:"burst,optional"`
}

type rawRecycle struct {
	MaxRequests *int           `hcl:"max_requests,optional"`
	MaxMemory   hcl.Expression `hcl:"max_memory,optional"`
	MaxAge      *string        `hcl:"max_age,optional"`
	Interval    *string        `hcl:"check_interval,optional"`
}

type rawAutoscale struct {
	Min            *int    `hcl:"min,optional"`
	Max            *int    `hcl:"max,optional"`
	ScaleUpAfter   *string `hcl:"scale_up_after,optional"`
	ScaleDownAfter *string `hcl:"scale_down_after,optional"`
	Cooldown       *string `hcl:"cooldown,optional"`
	Interval       *string `hcl:"check_interval,optional"`
}

type rawQueue struct {
	Size    *int    `hcl:"size,optional"`
	Timeout *string `hcl:"timeout,optional"`
}

type rawHealth struct {
	Type               *string `hcl:"type,optional"`
	Path               *string `hcl:"path,optional"`
	Host               *string `hcl:"host,optional"`
	Interval           *string `hcl:"interval,optional"`
	Timeout            *string `hcl:"timeout,optional"`
	ExpectStatus       []int   `hcl:"expect_status,optional"`
	HealthyThreshold   *int    `hcl:"healthy_threshold,optional"`
	UnhealthyThreshold *int    `hcl:"unhealthy_threshold,optional"`
	RestartAfter       *string `hcl:"restart_after,optional"`
}

type rawPassive struct {
	Failures          *int    `hcl:"failures,optional"`
	Count5xx          *bool   `hcl:"count_5xx,optional"`
	BaseEjection      *string `hcl:"base_ejection,optional"`
	MaxEjection       *string `hcl:"max_ejection,optional"`
	MaxEjectedPercent *int    `hcl:"max_ejected_percent,optional"`
}

// Load reads, parses, decodes, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		// A file that cannot be read still gets a position, so that every
		// config error reads the same way.
		return nil, Problems{{File: path, Line: 1, Column: 1, Message: fmt.Sprintf("reading config: %v", err)}}
	}
	return Parse(src, path)
}

// Parse does the same as Load for src; filename is used in diagnostics and
// to resolve relative paths (dir, tls, watch are relative to its directory).
func Parse(src []byte, filename string) (*Config, error) {
	path, err := filepath.Abs(filename)
	if err != nil {
		return nil, fmt.Errorf("resolving config path: %w", err)
	}
	c := newChecker(filename)
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		// The tree after a syntax error is partial; decoding it would only
		// add confusing follow-on problems.
		c.diagnostics(diags, nil)
		return nil, c.sorted()
	}
	body := file.Body.(*hclsyntax.Body)
	var raw rawFile
	c.diagnostics(gohcl.DecodeBody(body, nil, &raw), body)

	cfg := c.build(&raw, rootNode(body), filepath.Dir(path))
	if len(c.problems) > 0 {
		return nil, c.sorted()
	}
	cfg.Path = path
	return cfg, nil
}

// build defaults and validates raw into a Config; base resolves relative paths.
func (c *checker) build(raw *rawFile, root node, base string) *Config {
	cfg := &Config{
		Listen:      c.address(root, "listen", raw.Listen, "127.0.0.1:8080", false),
		WorkerPorts: c.portRange(root, "worker_ports", raw.WorkerPorts, PortRange{First: 20000, Last: 29999}),
	}

	admin := root.child("admin")
	a := deref(raw.Admin)
	cfg.Admin.Listen = c.address(admin, "listen", a.Listen, "127.0.0.1:9180", true)
	if cfg.Admin.Listen != "" && cfg.Admin.Listen == cfg.Listen {
		c.bad(admin, "listen", "must differ from listen %q", cfg.Listen)
	}

	c.adminAccess(admin, a, &cfg.Admin, base)

	c.outsideWorkerPorts(root, "listen", cfg.Listen, cfg.WorkerPorts)
	c.outsideWorkerPorts(admin, "listen", cfg.Admin.Listen, cfg.WorkerPorts)

	logNode := root.child("log")
	l := deref(raw.Log)
	cfg.Log.Level = c.oneOf(logNode, "level", l.Level, "info", "trace", "debug", "info", "warn", "error")
	cfg.Log.Format = c.oneOf(logNode, "format", l.Format, "text", "text", "json")
	cfg.Log.Access = valueOr(l.Access, false)

	cfg.Proxy = c.proxy(root.child("proxy"), deref(raw.Proxy), base)

	shutdown := root.child("shutdown")
	s := deref(raw.Shutdown)
	cfg.Shutdown.Timeout = c.duration(shutdown, "timeout", s.Timeout, 25*time.Second)
	c.positive(shutdown, "timeout", cfg.Shutdown.Timeout)
	cfg.Shutdown.PreStopDelay = c.duration(shutdown, "pre_stop_delay", s.PreStopDelay, 0)

	for _, ra := range raw.Apps {
		cfg.Apps = append(cfg.Apps, c.app(root.blockAt(ra.DefRange), ra, base))
	}
	c.crossApps(cfg, raw, root)
	return cfg
}

func (c *checker) proxy(n node, r rawProxy, base string) Proxy {
	p := Proxy{
		ReadHeaderTimeout:     c.duration(n, "read_header_timeout", r.ReadHeaderTimeout, 10*time.Second),
		ReadTimeout:           c.duration(n, "read_timeout", r.ReadTimeout, 0),
		WriteTimeout:          c.duration(n, "write_timeout", r.WriteTimeout, 0),
		IdleTimeout:           c.duration(n, "idle_timeout", r.IdleTimeout, 90*time.Second),
		MaxHeaderBytes:        c.intIn(n, "max_header_bytes", r.MaxHeaderBytes, 16384, 1, 64<<20),
		MaxBodyBytes:          c.size(n, "max_body_bytes", r.MaxBodyBytes),
		MaxConnections:        c.intIn(n, "max_connections", r.MaxConnections, 0, 1, 1<<24),
		DialTimeout:           c.duration(n, "dial_timeout", r.DialTimeout, 2*time.Second),
		ResponseHeaderTimeout: c.duration(n, "response_header_timeout", r.ResponseHeaderTimeout, 60*time.Second),
		WorkerIdleTimeout:     c.duration(n, "worker_idle_timeout", r.WorkerIdleTimeout, 90*time.Second),
		TrustedProxies:        c.prefixes(n, "trusted_proxies", r.TrustedProxies),
		RequestID:             valueOr(r.RequestID, true),
		H2C:                   valueOr(r.H2C, false),
	}
	c.positive(n, "dial_timeout", p.DialTimeout)
	if r.TLS != nil {
		t := n.child("tls")
		p.TLS = &TLS{
			Cert: c.existingFile(t, "cert", r.TLS.Cert, base),
			Key:  c.existingFile(t, "key", r.TLS.Key, base),
		}
	}
	p.Buffering = c.buffering(n.child("buffering"), deref(r.Buffering), base)
	return p
}

// buffering reads the proxy's buffering block; the defaults protect
// single-threaded workers from slow clients (README: Slow clients).
func (c *checker) buffering(n node, r rawBuffering, base string) Buffering {
	b := Buffering{
		RequestMemory:  c.sizeOr(n, "request_memory", r.RequestMemory, 1<<20),
		RequestDisk:    c.sizeOr(n, "request_disk", r.RequestDisk, 16<<20),
		ResponseMemory: c.sizeOr(n, "response_memory", r.ResponseMemory, 1<<20),
		ResponseDisk:   c.sizeOr(n, "response_disk", r.ResponseDisk, 1<<30),
		MemoryLimit:    c.sizeOr(n, "memory_limit", r.MemoryLimit, 128<<20),
		DiskLimit:      c.sizeOr(n, "disk_limit", r.DiskLimit, 4<<30),
		Chunked:        valueOr(r.Chunked, true),
	}
	const maxMemory = 1 << 30 // one buffer in memory; larger belongs on disk
	tooLarge := false
	for _, k := range []struct {
		name string
		v    int64
	}{{"request_memory", b.RequestMemory}, {"response_memory", b.ResponseMemory}} {
		if k.v > maxMemory {
			tooLarge = true
			c.bad(n, k.name, "must be at most 1GiB (larger buffers belong on disk: request_disk, response_disk)")
		}
	}
	if !tooLarge && b.MemoryLimit < max(b.RequestMemory, b.ResponseMemory, 32<<10) {
		c.bad(n, "memory_limit", "must be at least request_memory, response_memory and 32KiB (one buffer block)")
	}
	if r.Dir != nil {
		b.Dir = absPath(*r.Dir, base)
		c.exists(n, "dir", b.Dir, true)
	}
	return b
}

func (c *checker) app(n node, r *rawApp, base string) *App {
	if !validName(r.Name) {
		c.add(n.key, n.at, "app name %q must use only letters, digits, \"_\" and \"-\"", r.Name)
	}
	a := &App{
		Name:    r.Name,
		Command: r.Command,
		Dir:     c.dir(n, "dir", r.Dir, base),
		Env:     c.env(n, "env", r.Env),
		User:    valueOr(r.User, ""),
		Group:   valueOr(r.Group, ""),

		Background: !valueOr(r.Background, true),
		SettleTime: c.duration(n, "settle_time", r.SettleTime, time.Second),

		Instances:     c.intIn(n, "instances", r.Instances, min(runtime.NumCPU(), 256), 1, 256),
		StopSignal:    c.signal(n, "stop_signal", r.StopSignal),
		DrainTimeout:  c.duration(n, "drain_timeout", r.DrainTimeout, 30*time.Second),
		StopTimeout:   c.duration(n, "stop_timeout", r.StopTimeout, 30*time.Second),
		StartTimeout:  c.duration(n, "start_timeout", r.StartTimeout, 60*time.Second),
		ExitOnFailure: c.duration(n, "exit_on_failure", r.ExitOnFailure, 0),
		Watch:         absPaths(r.Watch, base),
		WatchDebounce: c.duration(n, "watch_debounce", r.WatchDebounce, 500*time.Millisecond),

		Hosts:        c.hosts(n, "hosts", r.Hosts),
		PathPrefix:   c.pathPrefix(n, "path_prefix", r.PathPrefix),
		StripPrefix:  valueOr(r.StripPrefix, false),
		Balance:      c.oneOf(n, "balance", r.Balance, BalanceLeastOutstanding, BalanceLeastOutstanding, BalanceRoundRobin, BalanceP2C, BalanceIPHash, BalanceCookie),
		StickyCookie: c.cookieName(n, "sticky_cookie", r.StickyCookie),
		MaxInflight:  c.intIn(n, "max_inflight", r.MaxInflight, 0, 0, 1<<20),
		Retries:      c.intIn(n, "retries", r.Retries, 2, 0, 10),
		RetryTimeout: c.duration(n, "retry_timeout", r.RetryTimeout, 10*time.Second),
	}
	switch {
	case r.Command == nil:
		c.add(n.sub("command"), n.at, "is required, e.g. command = [\"./server\", \"--port={port}\"]")
	case len(r.Command) == 0 || r.Command[0] == "":
		c.bad(n, "command", "must name a program to run")
	}
	c.positive(n, "start_timeout", a.StartTimeout)
	c.positive(n, "drain_timeout", a.DrainTimeout)
	if a.StopTimeout == 0 {
		// Zero would mean SIGKILL right after the stop signal; say how to
		// ask for that instead of guessing.
		c.bad(n, "stop_timeout", "must be greater than 0 (stop_signal = \"SIGKILL\" kills at once)")
	}
	if r.Autoscale != nil {
		a.Autoscale = c.autoscale(n, r, a)
	}
	maxSurge := a.Instances
	if a.Autoscale != nil {
		maxSurge = max(maxSurge, a.Autoscale.Max)
	}
	if !c.fine(n.sub("instances")) {
		maxSurge = 256 // judge surge against instances only once they are valid
	}
	a.Surge = c.intIn(n, "surge", r.Surge, 1, 1, maxSurge)

	backoff := n.child("backoff")
	b := deref(r.Backoff)
	a.Backoff = Backoff{
		Min:        c.duration(backoff, "min", b.Min, 100*time.Millisecond),
		Max:        c.duration(backoff, "max", b.Max, 30*time.Second),
		ResetAfter: c.duration(backoff, "reset_after", b.ResetAfter, 30*time.Second),
		MinUptime:  c.duration(backoff, "min_uptime", b.MinUptime, time.Second),
		// Ten a minute keeps a pool whose workers are killed every few
		// seconds at full strength, while a worker that crashes on every
		// request still ends up backing off.
		QuickRestarts: c.intIn(backoff, "quick_restarts", b.QuickRestarts, 10, 0, 1000),
	}
	c.positive(backoff, "min", a.Backoff.Min)
	if c.fine(backoff.sub("min"), backoff.sub("max")) && a.Backoff.Min > a.Backoff.Max {
		c.bad(backoff, "max", "must not be less than min (%s), got %s", a.Backoff.Min, a.Backoff.Max)
	}

	output := n.child("output")
	o := deref(r.Output)
	a.Output = Output{
		// 2000 lines a second is about 1.2% of a core per worker (a line
		// logged through the root logger and the /logs ring costs some
		// 6 µs, a dropped one 11 ns); a burst of 10000 lets a start-up
		// banner or a stack trace through whole.
		LinesPerSecond: c.intIn(output, "lines_per_second", o.LinesPerSecond, 2000, 0, 1_000_000),
		Burst:          c.intIn(output, "burst", o.Burst, 10000, 1, 10_000_000),
	}

	if a.Background {
		c.background(n, r, a)
	} else {
		c.oneAddress(n, a)
	}

	recycle := n.child("recycle")
	rc := deref(r.Recycle)
	a.Recycle = Recycle{
		MaxRequests: c.intIn(recycle, "max_requests", rc.MaxRequests, 0, 0, 1<<40),
		MaxMemory:   c.size(recycle, "max_memory", rc.MaxMemory),
		MaxAge:      c.duration(recycle, "max_age", rc.MaxAge, 0),
		Interval:    c.duration(recycle, "check_interval", rc.Interval, 5*time.Second),
	}
	c.positive(recycle, "check_interval", a.Recycle.Interval)

	if r.Health != nil {
		a.Health = c.health(n.child("health"), r.Health)
	}
	a.Passive = c.passive(n.child("passive"), deref(r.Passive))

	queue := n.child("queue")
	q := deref(r.Queue)
	a.Queue = Queue{
		Size:    c.intIn(queue, "size", q.Size, 256, 0, 1<<20),
		Timeout: c.duration(queue, "timeout", q.Timeout, 10*time.Second),
	}
	return a
}

// autoscale reads an app's autoscale block and fits instances to its
// bounds: absent, it starts at min; set, it must lie within them.
func (c *checker) autoscale(n node, r *rawApp, a *App) *Autoscale {
	an := n.child("autoscale")
	ra := r.Autoscale
	as := &Autoscale{
		Min:            c.intIn(an, "min", ra.Min, 1, 1, 256),
		Max:            c.intIn(an, "max", ra.Max, 0, 1, 256),
		ScaleUpAfter:   c.duration(an, "scale_up_after", ra.ScaleUpAfter, 2*time.Second),
		ScaleDownAfter: c.duration(an, "scale_down_after", ra.ScaleDownAfter, 30*time.Second),
		Cooldown:       c.duration(an, "cooldown", ra.Cooldown, 5*time.Second),
		Interval:       c.duration(an, "check_interval", ra.Interval, 500*time.Millisecond),
	}
	if ra.Max == nil {
		c.add(an.sub("max"), an.at, "is required, e.g. max = 8")
	}
	c.positive(an, "scale_down_after", as.ScaleDownAfter)
	c.positive(an, "check_interval", as.Interval)
	bounds := c.fine(an.sub("min"), an.sub("max"))
	if bounds && as.Max < as.Min {
		c.bad(an, "max", "must not be less than min (%d), got %d", as.Min, as.Max)
		bounds = false
	}
	switch {
	case r.Instances == nil:
		a.Instances = as.Min
	case bounds && c.fine(n.sub("instances")) && (a.Instances < as.Min || a.Instances > as.Max):
		c.bad(n, "instances", "is the starting size with autoscale: must be within min..max (%d..%d), got %d", as.Min, as.Max, a.Instances)
	}
	if a.Background {
		c.add(an.key, an.at, "a background app (serve = false) gets no requests to scale by")
	} else if a.MaxInflight == 0 {
		c.add(an.key, an.at, "autoscale judges saturation by max_inflight: set max_inflight on the app")
	}
	return as
}

// background checks what a background app (serve = false) cannot have: it
// gets no port, so neither {port}, {socket} nor a health check (which needs
// a port) make sense, and no route.
func (c *checker) background(n node, r *rawApp, a *App) {
	for i, arg := range a.Command {
		if strings.Contains(arg, "{port}") || strings.Contains(arg, "{socket}") {
			c.badItem(n, "command", i, "a background app (serve = false) gets no port: remove {port}/{socket}")
			break
		}
	}
	if r.Health != nil {
		hn := n.child("health")
		c.add(hn.key, hn.at, "a background app (serve = false) has no port to check; it is ready once it has stayed up for settle_time")
	}
	if len(a.Hosts) > 0 {
		c.bad(n, "hosts", "a background app (serve = false) gets no route")
	}
	if a.PathPrefix != "" {
		c.bad(n, "path_prefix", "a background app (serve = false) gets no route")
	}
}

// oneAddress checks that a served app's command asks for one kind of
// address: a worker listens either on {port} or on {socket}, and PORT
// carries that one.
func (c *checker) oneAddress(n node, a *App) {
	port, socket := -1, -1
	for i, arg := range a.Command {
		if port < 0 && strings.Contains(arg, "{port}") {
			port = i
		}
		if socket < 0 && strings.Contains(arg, "{socket}") {
			socket = i
		}
	}
	if port >= 0 && socket >= 0 {
		c.badItem(n, "command", max(port, socket), "uses both {port} and {socket}: a worker listens on one, a TCP port or a Unix socket")
	}
}

func (c *checker) health(n node, r *rawHealth) *Health {
	h := &Health{
		Type:               c.oneOf(n, "type", r.Type, "http", "http", "tcp"),
		Path:               valueOr(r.Path, "/"),
		Host:               valueOr(r.Host, ""),
		Interval:           c.duration(n, "interval", r.Interval, 2*time.Second),
		Timeout:            c.duration(n, "timeout", r.Timeout, time.Second),
		ExpectStatus:       r.ExpectStatus,
		HealthyThreshold:   c.intIn(n, "healthy_threshold", r.HealthyThreshold, 2, 1, 1000),
		UnhealthyThreshold: c.intIn(n, "unhealthy_threshold", r.UnhealthyThreshold, 3, 1, 1000),
		RestartAfter:       c.duration(n, "restart_after", r.RestartAfter, 60*time.Second),
	}
	if h.Type == "http" && (h.Path == "" || h.Path[0] != '/') {
		c.bad(n, "path", "must start with \"/\", got %q", h.Path)
	}
	c.positive(n, "interval", h.Interval)
	c.positive(n, "timeout", h.Timeout)
	for i, code := range h.ExpectStatus {
		if code < 100 || code > 599 {
			c.badItem(n, "expect_status", i, "must hold HTTP status codes 100..599, got %d", code)
		}
	}
	return h
}

func (c *checker) passive(n node, r rawPassive) Passive {
	p := Passive{
		Failures:          c.intIn(n, "failures", r.Failures, 5, 0, 1000),
		Count5xx:          valueOr(r.Count5xx, false),
		BaseEjection:      c.duration(n, "base_ejection", r.BaseEjection, 10*time.Second),
		MaxEjection:       c.duration(n, "max_ejection", r.MaxEjection, 5*time.Minute),
		MaxEjectedPercent: c.intIn(n, "max_ejected_percent", r.MaxEjectedPercent, 50, 0, 100),
	}
	if c.fine(n.sub("base_ejection"), n.sub("max_ejection")) && p.BaseEjection > p.MaxEjection {
		c.bad(n, "max_ejection", "must not be less than base_ejection (%s), got %s", p.BaseEjection, p.MaxEjection)
	}
	return p
}

// crossApps checks what no single app can: names, routes and port space.
func (c *checker) crossApps(cfg *Config, raw *rawFile, root node) {
	if len(cfg.Apps) == 0 {
		c.add("app", root.at, "at least one app block is required")
		return
	}
	byName := map[string]bool{}
	var defaultApp string
	instances := 0
	for i, a := range cfg.Apps {
		n := root.blockAt(raw.Apps[i].DefRange)
		if a.Background {
			// A background app takes no port and claims no route.
			if byName[a.Name] {
				c.add(n.key, n.at, "app %q is defined twice", a.Name)
			}
			byName[a.Name] = true
			continue
		}
		switch {
		case a.UsesSocket(): // socket workers take no ports
		case a.Autoscale != nil:
			instances += max(a.Instances, a.Autoscale.Max) + a.Surge
		default:
			instances += a.Instances + a.Surge
		}
		if byName[a.Name] {
			c.add(n.key, n.at, "app %q is defined twice", a.Name)
			continue
		}
		byName[a.Name] = true
		if len(a.Hosts) == 0 && a.PathPrefix == "" {
			if defaultApp != "" {
				c.add(n.key, n.at, "app %q and app %q both have no hosts and no path_prefix; only one app may be the default", defaultApp, a.Name)
			} else {
				defaultApp = a.Name
			}
			continue
		}
		for _, other := range cfg.Apps[:i] {
			if other.Name != a.Name && sameRoute(a, other) {
				key := "path_prefix"
				if len(a.Hosts) > 0 {
					key = "hosts"
				}
				c.bad(n, key, "claims the same hosts and path_prefix as app %q", other.Name)
			}
		}
	}
	ports := cfg.WorkerPorts.Last - cfg.WorkerPorts.First + 1
	if ports > 0 && ports < 2*instances {
		c.add("worker_ports", root.rangeOf("worker_ports"),
			"holds %d ports, but the apps need at least %d (twice their instances plus surge)", ports, 2*instances)
	}
}

// outsideWorkerPorts reports a listen address whose port workers could be
// given, which would make one of them fail to bind at some point.
func (c *checker) outsideWorkerPorts(n node, name, addr string, r PortRange) {
	_, p, err := net.SplitHostPort(addr)
	if err != nil || !c.fine("worker_ports") {
		return // disabled, or a value already reported
	}
	if port, _ := strconv.Atoi(p); port >= r.First && port <= r.Last {
		c.bad(n, name, "port %d lies within worker_ports %d-%d", port, r.First, r.Last)
	}
}

// sameRoute reports whether two apps claim an identical route: overlapping
// host sets (both empty counts as overlapping) and the same path prefix.
func sameRoute(a, b *App) bool {
	if a.PathPrefix != b.PathPrefix {
		return false
	}
	if len(a.Hosts) == 0 || len(b.Hosts) == 0 {
		return len(a.Hosts) == len(b.Hosts)
	}
	for _, h := range a.Hosts {
		for _, g := range b.Hosts {
			if h == g {
				return true
			}
		}
	}
	return false
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func valueOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
