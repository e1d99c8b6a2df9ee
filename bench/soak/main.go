// Command soak runs corral under load for a given time while its workers are
// killed, frozen, rolled and scaled and its config is reloaded (valid and
// broken edits), then prints what happened and checks that corral leaked
// nothing. bench/soak.sh builds it and corral and runs it; see bench/README.md.
//
//	soak run -corral BIN [-d 30m] [-c 16] [-rate 500] ...
//	soak worker [-port N | -socket PATH]   the app it runs under corral
//	soak background                        the serve = false app
//
// It exits 1 when a request failed other than by being in flight on a worker
// it killed, when corral's goroutines or open fds do not return to their
// baseline, when its RSS still grows at the end of the load, or when a chaos
// step did not reach its state in time.
package main

import (
	"context"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: soak run|worker|background [flags]")
	}
	switch os.Args[1] {
	case "run":
		os.Exit(run(os.Args[2:]))
	case "worker":
		worker(os.Args[2:])
	case "background":
		background()
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

type options struct {
	corral    string
	dir       string
	duration  time.Duration
	warmup    time.Duration
	clients   int
	rate      int
	timeout   time.Duration
	settle    time.Duration
	ports     string
	tolG      int
	tolFD     int
	rssGrowth float64
	rssSlack  int // MiB
	killSlack time.Duration
}

func run(args []string) int {
	var o options
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.corral, "corral", "", "corral binary (required)")
	fs.StringVar(&o.dir, "dir", "", "work directory for the config and corral's log (required)")
	fs.DurationVar(&o.duration, "d", 30*time.Minute, "load and chaos this long")
	fs.DurationVar(&o.warmup, "warmup", 10*time.Second, "load without chaos before the baseline")
	fs.IntVar(&o.clients, "c", 16, "concurrent clients")
	fs.IntVar(&o.rate, "rate", 500, "requests per second at most, all clients together")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Second, "a request not done in this is a failure (timeout)")
	fs.DurationVar(&o.settle, "settle", 60*time.Second, "after the load, how long goroutines and fds get to return to baseline")
	fs.StringVar(&o.ports, "worker-ports", "30500-30999", "corral's worker_ports")
	fs.IntVar(&o.tolG, "goroutine-tolerance", 10, "goroutines above baseline still counted as back")
	fs.IntVar(&o.tolFD, "fd-tolerance", 5, "open fds above baseline still counted as back")
	fs.Float64Var(&o.rssGrowth, "rss-growth", 1.25, "the load's second-half RSS peak may be this times its first-half peak ...")
	fs.IntVar(&o.rssSlack, "rss-slack", 16, "... plus this many MiB")
	fs.DurationVar(&o.killSlack, "kill-slack", time.Second, "a request started this soon after a kill may still have gone to the killed worker")
	_ = fs.Parse(args)
	if o.corral == "" || o.dir == "" {
		log.Print("soak run: -corral and -dir are required")
		return 2
	}
	s, err := newSoak(o)
	if err != nil {
		log.Printf("soak: %v", err)
		return 1
	}
	defer s.stop()
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := s.soak(ctx); err != nil {
		log.Printf("soak: %v", err)
		s.tailLog()
		return 1
	}
	if f, err := os.Create(filepath.Join(o.dir, "failures.log")); err == nil {
		s.failLog = f
		defer f.Close()
	}
	if !s.report(os.Stdout) {
		return 1
	}
	return 0
}

type soak struct {
	o      options
	cfg    *soakConfig
	adm    *admin
	cmd    *exec.Cmd
	logf   *os.File
	exited chan struct{}
	smp    *sampler
	ld     *load
	ch     *chaos

	base, peak, after sample
	backAfter         time.Duration
	back              bool
	rssFirst, rssLast int // KiB: peaks of the load's first and second half
	start             time.Time
	failLog           io.Writer // every failed request, for a closer look
	loadTime          time.Duration
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func newSoak(o options) (*soak, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := &soakConfig{path: filepath.Join(o.dir, "config.hcl"), bin: self, listen: listen, adminAddr: adminAddr,
		token: "soak-token-0123456789abcdef", ports: o.ports}
	if err := cfg.write(0, 3, false); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(o.dir, "corral.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(o.corral, "run", "-config", cfg.path)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &soak{o: o, cfg: cfg, adm: newAdmin(adminAddr, cfg.token), cmd: cmd, logf: logf, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.exited) }()
	s.smp = &sampler{adm: s.adm, pid: cmd.Process.Pid, repl: map[string]float64{}}
	s.ld = newLoad(listen, o.clients, o.rate, o.timeout)
	chaosLog, err := os.Create(filepath.Join(o.dir, "chaos.log"))
	if err != nil {
		return nil, err
	}
	s.ch = &chaos{log: chaosLog, adm: s.adm, cfg: cfg, corralPid: cmd.Process.Pid, gap: time.Second, freeze: 3 * time.Second,
		timeout: 60 * time.Second, done: map[string]int{}}
	return s, nil
}

// stop shuts corral down the graceful way (it stops its workers), and kills
// it if it has not exited in 30 s.
func (s *soak) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		log.Print("soak: corral ignored SIGTERM for 30s, killing it")
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.logf.Close()
}

func (s *soak) tailLog() {
	b, _ := os.ReadFile(s.logf.Name())
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	log.Printf("last lines of %s:\n%s", s.logf.Name(), strings.Join(lines[max(0, len(lines)-30):], "\n"))
}

func (s *soak) soak(ctx context.Context) error {
	logf := func(format string, args ...any) {
		log.Printf("[%s] "+format, append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	logf("corral pid %d, public %s, admin %s, config %s", s.cmd.Process.Pid, s.cfg.listen, s.cfg.adminAddr, s.cfg.path)
	if err := s.adm.waitFor("every worker ready", 60*time.Second, (*status).settled); err != nil {
		return err
	}

	logf("warm-up: %s of load, no chaos", s.o.warmup)
	wctx, wcancel := context.WithTimeout(ctx, s.o.warmup)
	s.ld.run(wctx)
	wcancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	base, err := s.idle(ctx)
	if err != nil {
		return err
	}
	s.base = base
	warm := len(s.ld.results)
	s.ld.results = nil
	logf("baseline: %d goroutines, %d fds, %d KiB RSS (after %d warm-up requests)", base.goroutines, base.fds, base.rss, warm)

	logf("soak: %s of load and chaos", s.o.duration)
	s.start = time.Now()
	lctx, lcancel := context.WithCancel(ctx)
	cctx, ccancel := context.WithTimeout(ctx, s.o.duration)
	defer ccancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.ld.run(lctx) }()
	chaosDone := make(chan struct{})
	go func() { defer close(chaosDone); s.ch.run(cctx) }()
	stopSampling := make(chan struct{})
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				if _, err := s.smp.take(); err != nil {
					logf("sample: %v", err)
				}
				if time.Since(last) >= time.Minute {
					last = time.Now()
					s.progress(logf)
				}
			}
		}
	}()
	<-chaosDone // the chaos stops at the end of the step it is in when the time is up; the load runs until then
	lcancel()
	close(stopSampling)
	wg.Wait()
	s.loadTime = time.Since(s.start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s.rssHalves()

	logf("load stopped after %s; waiting up to %s for goroutines and fds to return to baseline", s.loadTime.Round(time.Second), s.o.settle)
	// A reload (of the file as the chaos left it) undoes a runtime scale a
	// failed step may have left behind.
	if err := s.ch.post("/reload", nil); err != nil {
		return err
	}
	if err := s.adm.waitFor("every worker ready", 60*time.Second, (*status).settled); err != nil {
		return err
	}
	// Measured as the baseline was; then, if not back yet, sampled every
	// second until it is or settle has passed.
	t0 := time.Now()
	x, err := s.idle(ctx)
	if err != nil {
		return err
	}
	for {
		s.after = x
		if x.goroutines <= s.base.goroutines+s.o.tolG && x.fds <= s.base.fds+s.o.tolFD {
			s.back, s.backAfter = true, time.Since(t0)
			return nil
		}
		if time.Since(t0) > s.o.settle {
			return nil
		}
		time.Sleep(time.Second)
		if x, err = s.smp.take(); err != nil {
			return err
		}
	}
}

// idleWait is how long corral needs to become idle once its clients left:
// its pooled worker connections close after worker_idle_timeout (2 s here),
// and fasthttp's idle serving goroutines exit once idle for 10 s, at the
// next round of its cleaner, which runs every 10 s: up to 20 s.
const idleWait = 21 * time.Second

// idle closes the load's connections, waits idleWait and returns the median
// of three samples a second apart.
func (s *soak) idle(ctx context.Context) (sample, error) {
	s.ld.closeIdle()
	select {
	case <-ctx.Done():
		return sample{}, ctx.Err()
	case <-time.After(idleWait):
	}
	var xs []sample
	for i := 0; i < 3; i++ {
		x, err := s.smp.take()
		if err != nil {
			return sample{}, err
		}
		xs = append(xs, x)
		time.Sleep(time.Second)
	}
	med := func(f func(sample) int) int {
		v := make([]int, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return sample{at: xs[1].at, goroutines: med(func(x sample) int { return x.goroutines }),
		fds: med(func(x sample) int { return x.fds }), rss: med(func(x sample) int { return x.rss })}, nil
}

// rssHalves finds the peaks of the samples taken under load, over all and
// per half of the load.
func (s *soak) rssHalves() {
	mid := s.start.Add(s.loadTime / 2)
	s.smp.mu.Lock()
	defer s.smp.mu.Unlock()
	for _, x := range s.smp.samples {
		if x.at.Before(s.start) {
			continue
		}
		s.peak.goroutines = max(s.peak.goroutines, x.goroutines)
		s.peak.fds = max(s.peak.fds, x.fds)
		s.peak.rss = max(s.peak.rss, x.rss)
		if x.at.Before(mid) {
			s.rssFirst = max(s.rssFirst, x.rss)
		} else {
			s.rssLast = max(s.rssLast, x.rss)
		}
	}
}

func (s *soak) progress(logf func(string, ...any)) {
	s.ld.mu.Lock()
	n, failed := len(s.ld.results), 0
	for _, r := range s.ld.results {
		if r.fail != "" {
			failed++
		}
	}
	s.ld.mu.Unlock()
	s.smp.mu.Lock()
	x := s.smp.samples[len(s.smp.samples)-1]
	s.smp.mu.Unlock()
	s.ch.mu.Lock()
	steps, kills := 0, len(s.ch.kills)
	for _, v := range s.ch.done {
		steps += v
	}
	s.ch.mu.Unlock()
	logf("%s: %d requests, %d failed; %d chaos steps, %d kills; corral %d goroutines, %d fds, %d KiB RSS",
		time.Since(s.start).Round(time.Second), n, failed, steps, kills, x.goroutines, x.fds, x.rss)
}
