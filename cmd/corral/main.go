// Command corral runs N copies of any web app on private loopback ports and
// serves them on one public port through a load-balancing reverse proxy.
//
//	corral run [-config FILE]        # default ./config.hcl (or $CORRAL_CONFIG); `corral` alone = run
//	corral validate [-config FILE]   # exit 0 if valid, else every problem as file:line:col, exit 1
//	corral status [-admin ADDR]      # table of apps and workers
//	corral reload [-admin ADDR]      # ask the running corral to reload its config
//	corral scale [-admin ADDR] APP N           # run APP with N workers until the next reload
//	corral restart [-admin ADDR] APP [WORKER]  # rolling restart of APP, or replace one worker
//	corral health [-admin ADDR]      # exit 0 when the running corral answers /healthz
//	corral version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/admin"
	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

const (
	defaultConfig = "config.hcl"
	defaultAdmin  = "127.0.0.1:9180"
)

func main() {
	pool.RunShim() // a worker shim never gets further
	tuneRuntime()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runCommand(args, stderr)
	case "validate":
		return validateCommand(args, stdout, stderr)
	case "status":
		return statusCommand(args, stdout, stderr)
	case "reload":
		return reloadCommand(args, stdout, stderr)
	case "scale":
		return scaleCommand(args, stdout, stderr)
	case "restart":
		return restartCommand(args, stdout, stderr)
	case "health":
		return healthCommand(args, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "corral %s\n", version)
		return 0
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "corral: unknown command %q\n\n", cmd)
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  corral run [-config FILE]        run the apps of FILE (default ./config.hcl or $CORRAL_CONFIG)
  corral validate [-config FILE]   check FILE; print every problem as file:line:col
  corral status [-admin ADDR]      show apps and workers of a running corral
  corral reload [-admin ADDR]      make a running corral reload its config
  corral scale APP N [-admin ADDR]          run APP with N workers until the next reload
  corral restart APP [WORKER] [-admin ADDR] rolling restart of APP, or replace WORKER (web-2 or 2)
  corral health [-admin ADDR]      exit 0 when a running corral is alive (for HEALTHCHECK)
  corral version                   print the version
`)
}

// configPath resolves the config file: the flag, else $CORRAL_CONFIG, else ./config.hcl.
func configPath(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("CORRAL_CONFIG"); env != "" {
		return env
	}
	return defaultConfig
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("corral "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// configFlag parses the -config flag of run and validate; ok is false on a
// usage error (already printed).
func configFlag(name string, args []string, stderr io.Writer) (path string, ok bool) {
	fs := newFlags(name, stderr)
	file := fs.String("config", "", "config file (default ./config.hcl or $CORRAL_CONFIG)")
	if fs.Parse(args) != nil {
		return "", false
	}
	return configPath(*file), true
}

// loadConfig loads path, printing every problem (after intro, if any) when
// it does not load.
func loadConfig(path, intro string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil {
		if intro != "" {
			fmt.Fprintln(stderr, intro)
		}
		printConfigError(stderr, err)
		return nil, false
	}
	return cfg, true
}

func validateCommand(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("validate", args, stderr)
	if !ok {
		return 2
	}
	cfg, ok := loadConfig(path, "", stderr)
	if !ok {
		return 1
	}
	workers := 0
	for _, a := range cfg.Apps {
		workers += a.Instances
	}
	fmt.Fprintf(stdout, "%s: valid (%d apps, %d workers)\n", path, len(cfg.Apps), workers)
	return 0
}

// printConfigError prints every problem of a config error on its own line.
func printConfigError(w io.Writer, err error) {
	var problems config.Problems
	if errors.As(err, &problems) {
		for _, p := range problems {
			fmt.Fprintln(w, p.String())
		}
		return
	}
	fmt.Fprintln(w, err)
}

// adminAddr resolves the admin address for the client commands: the flag,
// else $CORRAL_ADMIN, else admin.listen of the local config file if it loads,
// else the default.
func adminAddr(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("CORRAL_ADMIN"); env != "" {
		return env
	}
	if cfg, err := config.Load(configPath("")); err == nil && cfg.Admin.Listen != "" {
		return dialable(cfg.Admin.Listen)
	}
	return defaultAdmin
}

// dialable turns a listen address into one a client on this machine can
// dial: a wildcard host (0.0.0.0, ::, none, as a container's admin listener
// has) becomes the loopback address of its family.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			return net.JoinHostPort("127.0.0.1", port)
		}
		return net.JoinHostPort("::1", port)
	}
	return listen
}

func clientFlags(name string, stderr io.Writer, args []string) (string, bool) {
	fs := newFlags(name, stderr)
	addr := fs.String("admin", "", "admin API address (default: admin.listen of ./config.hcl, else "+defaultAdmin+")")
	if fs.Parse(args) != nil {
		return "", false
	}
	return adminAddr(*addr), true
}

// clientArgs parses the -admin flag anywhere among args and returns the
// address and the other arguments; ok is false on a usage error (printed).
func clientArgs(name string, stderr io.Writer, args []string) (addr string, rest []string, ok bool) {
	fs := newFlags(name, stderr)
	flagAddr := fs.String("admin", "", "admin API address (default: admin.listen of ./config.hcl, else "+defaultAdmin+")")
	for {
		if fs.Parse(args) != nil {
			return "", nil, false
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		rest, args = append(rest, args[0]), args[1:]
	}
	return adminAddr(*flagAddr), rest, true
}

// rollTimeout bounds how long the CLI waits for a restart it asked for.
const rollTimeout = 10 * time.Minute

func scaleCommand(args []string, stdout, stderr io.Writer) int {
	addr, rest, ok := clientArgs("scale", stderr, args)
	if !ok {
		return 2
	}
	if len(rest) != 2 {
		fmt.Fprintln(stderr, "usage: corral scale [-admin ADDR] APP N")
		return 2
	}
	n, err := strconv.Atoi(rest[1])
	if err != nil {
		fmt.Fprintf(stderr, "corral: scale: N must be a whole number, not %q\n", rest[1])
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := admin.RequestScale(ctx, addr, rest[0], n)
	if err != nil {
		fmt.Fprintf(stderr, "corral: scale via %s: %v\n", addr, err)
		return 1
	}
	if res.Result != "applied" {
		fmt.Fprintf(stderr, "corral: scale %s: %s\n", rest[0], res.Error)
		return 1
	}
	if res.Autoscale {
		fmt.Fprintf(stdout, "%s: %d -> %d instances (runtime only: autoscaling goes on from here)\n",
			res.App, res.Previous, res.Instances)
		return 0
	}
	fmt.Fprintf(stdout, "%s: %d -> %d instances (runtime only: the next reload restores %d)\n",
		res.App, res.Previous, res.Instances, res.Configured)
	return 0
}

func restartCommand(args []string, stdout, stderr io.Writer) int {
	addr, rest, ok := clientArgs("restart", stderr, args)
	if !ok {
		return 2
	}
	if len(rest) < 1 || len(rest) > 2 {
		fmt.Fprintln(stderr, "usage: corral restart [-admin ADDR] APP [WORKER]")
		return 2
	}
	app := rest[0]
	ctx, cancel := context.WithTimeout(context.Background(), rollTimeout)
	defer cancel()
	if len(rest) == 1 {
		res, err := admin.RequestRestart(ctx, addr, app)
		if err != nil {
			fmt.Fprintf(stderr, "corral: restart via %s: %v\n", addr, err)
			return 1
		}
		if res.Result != "done" {
			fmt.Fprintf(stderr, "corral: restart %s: %s\n", app, res.Error)
			return 1
		}
		fmt.Fprintf(stdout, "%s: rolling restart done\n", app)
		return 0
	}
	id := rest[1]
	if _, err := strconv.Atoi(id); err == nil {
		id = app + "-" + id
	}
	if !strings.HasPrefix(id, app+"-") {
		fmt.Fprintf(stderr, "corral: restart: worker %q is not one of app %s (%s-N)\n", id, app, app)
		return 2
	}
	res, err := admin.RequestWorkerRestart(ctx, addr, id)
	if err != nil {
		fmt.Fprintf(stderr, "corral: restart via %s: %v\n", addr, err)
		return 1
	}
	if res.Result != "done" {
		fmt.Fprintf(stderr, "corral: restart %s: %s\n", id, res.Error)
		return 1
	}
	fmt.Fprintf(stdout, "%s: replaced\n", id)
	return 0
}

func statusCommand(args []string, stdout, stderr io.Writer) int {
	addr, ok := clientFlags("status", stderr, args)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := admin.FetchStatus(ctx, addr)
	if err != nil {
		fmt.Fprintf(stderr, "corral: status from %s: %v\n", addr, err)
		return 1
	}
	admin.WriteStatusTable(stdout, st)
	return 0
}

func reloadCommand(args []string, stdout, stderr io.Writer) int {
	addr, ok := clientFlags("reload", stderr, args)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := admin.RequestReload(ctx, addr)
	if err != nil {
		fmt.Fprintf(stderr, "corral: reload via %s: %v\n", addr, err)
		return 1
	}
	if !res.Applied {
		fmt.Fprintln(stderr, "reload rejected; the running config is unchanged:")
		for _, p := range res.Problems {
			fmt.Fprintln(stderr, "  "+p)
		}
		if res.Error != "" {
			fmt.Fprintln(stderr, "  "+res.Error)
		}
		return 1
	}
	fmt.Fprintf(stdout, "reloaded: %s\n", res.Changes)
	return 0
}

func healthCommand(args []string, stdout, stderr io.Writer) int {
	addr, ok := clientFlags("health", stderr, args)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := admin.CheckHealth(ctx, addr); err != nil {
		fmt.Fprintf(stderr, "corral: unhealthy (%s): %v\n", addr, err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}
