package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/admin"
	"github.com/corral-dev/corral/config"
)

// Exit codes of `corral run`.
const (
	exitOK      = 0
	exitFailure = 1 // bad config, busy port, an app gave up (exit_on_failure)
	exitForced  = 2 // a second SIGTERM/SIGINT cut the graceful shutdown short
)

// Reload triggers debounce and poll intervals of the config file watcher.
// $CORRAL_CONFIG_POLL replaces the poll interval ("0" turns the poll off,
// so that tests see what file events alone do).
const (
	watchDebounce = 250 * time.Millisecond
	watchPoll     = 5 * time.Second
)

// configPoll returns the poll interval of the config watcher.
func configPoll(stderr io.Writer) time.Duration {
	v := os.Getenv("CORRAL_CONFIG_POLL")
	if v == "" {
		return watchPoll
	}
	if v == "0" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		fmt.Fprintf(stderr, "corral: ignoring CORRAL_CONFIG_POLL=%q (want a duration such as 5s, or 0): using %s\n", v, watchPoll)
		return watchPoll
	}
	return d
}

func runCommand(args []string, stderr io.Writer) int {
	keepInheritedDescriptors()
	path, ok := configFlag("run", args, stderr)
	if !ok {
		return 2
	}
	intro := fmt.Sprintf("corral: cannot start with %s:", path)
	cfg, ok := loadConfig(path, intro, stderr)
	if !ok {
		return exitFailure
	}
	log, logs, logOut := newLogger(cfg.Log, stderr)
	defer logOut.Close(logCloseGrace)
	// Before any worker is spawned: the notify variables leave corral's
	// environment here.
	notify, watchdog := newNotifier(log)
	defer notify.close()

	// The watcher records the file as it is when it is made, so it is made
	// before the config that runs is loaded: an edit in between is then either
	// in that load or reported by the watcher, never lost.
	watcher := config.NewWatcher(cfg.Path, log.Named("config"), watchDebounce, configPoll(stderr))
	if cfg, ok = loadConfig(path, intro, stderr); !ok {
		return exitFailure
	}

	// Signals are caught before anything is spawned: as PID 1 corral gets no
	// default signal actions, and a SIGTERM during start-up must not be lost.
	// SIGQUIT stops gracefully too, as nginx does (images that set
	// STOPSIGNAL SIGQUIT for it keep working), instead of Go's goroutine
	// dump and exit 2, which would skip the shutdown and kill the workers.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in, err := start(ctx, cfg, log, watcher, logs, logOut, notify)
	if err != nil {
		log.Error("cannot start", "error", err)
		return exitFailure
	}
	in.goBackground(func() {
		watcher.Run(ctx, func() { in.Reload(ctx, admin.TriggerFile) })
	})
	in.goBackground(func() { notify.waitReady(ctx, in.Status) })
	in.goBackground(func() {
		// A shutdown stops the supervisors on purpose: keep-alives go on
		// until it ends, bounded by its own deadline.
		notify.runWatchdog(ctx, watchdog, func(ctx context.Context) error {
			if in.shuttingDown.Load() {
				return nil
			}
			return in.Alive(ctx)
		})
	})

	code := exitOK
	var reason string
wait:
	for {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				in.goBackground(func() { in.Reload(ctx, admin.TriggerSignal) })
			case syscall.SIGUSR2:
				in.restartAll(ctx)
			default:
				reason = s.String()
				break wait
			}
		case err := <-in.giveUp:
			log.Error("giving up: exiting so the supervisor can restart corral", "error", err)
			reason, code = "exit_on_failure", exitFailure
			break wait
		}
	}

	timeout := in.state.Load().cfg.Shutdown.Timeout
	log.Info("shutdown requested", "reason", reason, "timeout", timeout)
	notify.stopping()
	shutdownCtx, stopNow := context.WithTimeout(context.Background(), timeout)
	defer stopNow()
	done := make(chan struct{})
	go func() {
		defer close(done)
		in.shutdown(shutdownCtx)
		// The reaper and the reload goroutine end only now, after every
		// worker's exit has been delivered.
		cancel()
		in.background.Wait()
	}()
	// A last bound, for a shutdown wedged past its own deadline (a
	// supervisor that never answers): corral exits anyway, and the
	// parent-death signal takes the workers it still has.
	hardStop := time.NewTimer(timeout + exitGrace)
	defer hardStop.Stop()
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case s := <-sigs:
			if s == syscall.SIGTERM || s == syscall.SIGINT || s == syscall.SIGQUIT {
				log.Warn("second signal: stopping at once", "signal", s.String())
				code = exitForced
				stopNow()
				hardStop.Reset(exitGrace)
			}
		case <-hardStop.C:
			log.Error("shutdown did not finish after its deadline; exiting with work left", "grace", exitGrace)
			_ = in.sockets.Close() // the workers die with corral (parent-death signal)
			return exitFailure
		}
	}
	if errors.Is(shutdownCtx.Err(), context.DeadlineExceeded) {
		log.Warn("shutdown deadline reached; remaining work was cut short")
	}
	log.Info("stopped", "exit_code", code)
	return code
}

// logCloseGrace bounds the wait at exit for the last log lines to reach
// an output that does not take them.
const logCloseGrace = 2 * time.Second

// exitGrace is how long corral waits past shutdown.timeout (or past a
// second signal) for the kills and reaps that end its shutdown.
const exitGrace = 5 * time.Second

// newLogger makes the one root logger; subsystems derive Named loggers
// from it. Every line it writes (corral's own, and the workers' output)
// is also kept in the returned ring, for GET /logs and `corral logs`. It
// writes to stderr through a logOutput, so a blocked stderr never stalls
// a log call; Close it last.
func newLogger(c config.Log, stderr io.Writer) (hclog.Logger, *admin.LogRing, *logOutput) {
	opts := func(out io.Writer) *hclog.LoggerOptions {
		return &hclog.LoggerOptions{
			Name:       "corral",
			Level:      hclog.LevelFromString(c.Level),
			JSONFormat: c.Format == "json",
			Output:     out,
			Color:      hclog.ColorOff,
		}
	}
	notice := hclog.New(opts(stderr)) // used by the copying goroutine alone
	out := newLogOutput(stderr, func(n int) {
		notice.Warn("log lines dropped: the log output was blocked", "lines", n, "buffer_bytes", logBuffer)
	})
	log := hclog.NewInterceptLogger(opts(out))
	logs := admin.NewLogRing(log.GetLevel)
	log.RegisterSink(logs)
	return log, logs, out
}
