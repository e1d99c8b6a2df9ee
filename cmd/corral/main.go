// Command corral runs N copies of any web app on private loopback ports and
// serves them on one public port through a load-balancing reverse proxy.
//
//	corral run [-config FILE]        # default ./config.hcl (or $CORRAL_CONFIG); `corral` alone = run
//	corral validate [-config FILE]   # exit 0 if valid, else every problem as file:line:col, exit 1
//	corral status [-admin ADDR] [-json]        # table of apps and workers, or the /status JSON
//	corral reload [-admin ADDR]      # ask the running corral to reload its config
//	corral scale [-admin ADDR] APP N           # run APP with N workers until the next reload
//	corral restart [-admin ADDR] APP [WORKER]  # rolling restart of APP, or replace one worker
//	corral logs [-admin ADDR] [-n N] [-f=false] [APP]  # recent log lines, then new ones until Ctrl-C
//	corral health [-admin ADDR]      # exit 0 when the running corral answers /healthz
//	corral version
//
// The client commands also take -token (else $CORRAL_ADMIN_TOKEN, else the
// config file's admin token) and -config (where admin.listen and the token
// are read from).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
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
	// The time package reads the local zone's file on first use, opened
	// without close-on-exec: a worker forked meanwhile inherits it
	// (TestWorkersGetOnlyTheirStandardDescriptors saw fd 12 ->
	// /usr/share/zoneinfo/Etc/UTC once in CI). Read it now, before any
	// goroutine forks.
	_ = time.Local.String()
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
	case "logs":
		return logsCommand(args, stdout, stderr)
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
  corral status [-json]            show apps and workers of a running corral (-json: the /status JSON)
  corral reload                    make a running corral reload its config
  corral scale APP N               run APP with N workers until the next reload
  corral restart APP [WORKER]      rolling restart of APP, or replace WORKER (web-2 or 2)
  corral logs [-n N] [-f=false] [APP]  corral's log and the workers' output, then new lines until Ctrl-C
  corral health                    exit 0 when a running corral is alive (for HEALTHCHECK)
  corral version                   print the version

client commands (status, reload, scale, restart, logs, health) also take:
  -admin ADDR    admin API address (else $CORRAL_ADMIN, else admin.listen of the config, else 127.0.0.1:9180)
  -token TOKEN   admin token (else $CORRAL_ADMIN_TOKEN, else admin.token / admin.token_file of the config)
  -config FILE   the config those are read from (default ./config.hcl or $CORRAL_CONFIG)
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

// clientFlags are the flags every client command takes (status, reload,
// scale, restart, logs, health): where the admin API is and the token.
type clientFlags struct {
	admin, token, config *string
}

func addClientFlags(fs *flag.FlagSet) clientFlags {
	return clientFlags{
		admin:  fs.String("admin", "", "admin API address (default: $CORRAL_ADMIN, else admin.listen of the config file, else "+defaultAdmin+")"),
		token:  fs.String("token", "", "admin token (default: $CORRAL_ADMIN_TOKEN, else admin.token or admin.token_file of the config file)"),
		config: fs.String("config", "", "config file to read admin.listen and the token from (default ./config.hcl or $CORRAL_CONFIG)"),
	}
}

// client resolves the admin address and the token the same way for every
// command: the flag, else the environment ($CORRAL_ADMIN,
// $CORRAL_ADMIN_TOKEN), else the admin block of the config file when it
// loads, else the default address and no token.
func (f clientFlags) client() admin.Client {
	c := admin.Client{Addr: *f.admin, Token: *f.token}
	if c.Addr == "" {
		c.Addr = os.Getenv("CORRAL_ADMIN")
	}
	if c.Token == "" {
		c.Token = os.Getenv("CORRAL_ADMIN_TOKEN")
	}
	if c.Addr != "" && c.Token != "" {
		return c
	}
	cfg, err := config.Load(configPath(*f.config))
	if err != nil {
		if c.Addr == "" {
			c.Addr = defaultAdmin
		}
		return c
	}
	if c.Addr == "" {
		c.Addr = defaultAdmin
		if cfg.Admin.Listen != "" {
			c.Addr = dialable(cfg.Admin.Listen)
		}
	}
	if c.Token == "" {
		c.Token = cfg.Admin.Token
	}
	return c
}

// adminAddr resolves the admin address as the client commands do, without
// flags.
func adminAddr(flagValue string) string {
	empty := ""
	return clientFlags{admin: &flagValue, token: &empty, config: &empty}.client().Addr
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

// clientArgs parses the client flags (and those extra adds) anywhere among
// args and returns the client and the other arguments; ok is false on a
// usage error (printed).
func clientArgs(name string, stderr io.Writer, args []string, extra ...func(*flag.FlagSet)) (c admin.Client, rest []string, ok bool) {
	fs := newFlags(name, stderr)
	flags := addClientFlags(fs)
	for _, add := range extra {
		add(fs)
	}
	for {
		if fs.Parse(args) != nil {
			return admin.Client{}, nil, false
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		rest, args = append(rest, args[0]), args[1:]
	}
	return flags.client(), rest, true
}

// noArgs is clientArgs for a command that takes no other argument.
func noArgs(name string, stderr io.Writer, args []string, extra ...func(*flag.FlagSet)) (admin.Client, bool) {
	c, rest, ok := clientArgs(name, stderr, args, extra...)
	if ok && len(rest) > 0 {
		fmt.Fprintf(stderr, "corral %s: unexpected argument %q\n", name, rest[0])
		return c, false
	}
	return c, ok
}

// rollTimeout bounds how long the CLI waits for a restart it asked for.
const rollTimeout = 10 * time.Minute

func scaleCommand(args []string, stdout, stderr io.Writer) int {
	c, rest, ok := clientArgs("scale", stderr, args)
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
	res, err := c.Scale(ctx, rest[0], n)
	if err != nil {
		fmt.Fprintf(stderr, "corral: scale via %s: %v\n", c.Addr, err)
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
	c, rest, ok := clientArgs("restart", stderr, args)
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
	// outcome reports one restart's answer.
	outcome := func(what, result, failure string, err error, done string) int {
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "corral: restart via %s: %v\n", c.Addr, err)
			return 1
		case result != "done":
			fmt.Fprintf(stderr, "corral: restart %s: %s\n", what, failure)
			return 1
		}
		fmt.Fprintf(stdout, "%s: %s\n", what, done)
		return 0
	}
	if len(rest) == 1 {
		res, err := c.Restart(ctx, app)
		return outcome(app, res.Result, res.Error, err, "rolling restart done")
	}
	id := rest[1]
	if _, err := strconv.Atoi(id); err == nil {
		id = app + "-" + id
	}
	if !strings.HasPrefix(id, app+"-") {
		fmt.Fprintf(stderr, "corral: restart: worker %q is not one of app %s (%s-N)\n", id, app, app)
		return 2
	}
	res, err := c.RestartWorker(ctx, id)
	return outcome(id, res.Result, res.Error, err, "replaced")
}

func statusCommand(args []string, stdout, stderr io.Writer) int {
	var asJSON *bool
	c, ok := noArgs("status", stderr, args, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print the /status JSON (indented) instead of the table")
	})
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if *asJSON {
		raw, err := c.RawStatus(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "corral: status from %s: %v\n", c.Addr, err)
			return 1
		}
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			fmt.Fprintf(stderr, "corral: status from %s is not JSON: %v\n", c.Addr, err)
			return 1
		}
		fmt.Fprintln(stdout, strings.TrimSpace(out.String()))
		return 0
	}
	st, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "corral: status from %s: %v\n", c.Addr, err)
		return 1
	}
	admin.WriteStatusTable(stdout, st)
	return 0
}

func reloadCommand(args []string, stdout, stderr io.Writer) int {
	c, ok := noArgs("reload", stderr, args)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Reload(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "corral: reload via %s: %v\n", c.Addr, err)
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
	c, ok := noArgs("health", stderr, args)
	if !ok {
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Health(ctx); err != nil {
		fmt.Fprintf(stderr, "corral: unhealthy (%s): %v\n", c.Addr, err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

func logsCommand(args []string, stdout, stderr io.Writer) int {
	var lines *int
	var follow *bool
	c, rest, ok := clientArgs("logs", stderr, args, func(fs *flag.FlagSet) {
		lines = fs.Int("n", 100, "lines from before now to print first")
		follow = fs.Bool("f", true, "follow: print new lines as they come, until Ctrl-C (-f=false prints and exits)")
	})
	if !ok {
		return 2
	}
	if len(rest) > 1 {
		fmt.Fprintln(stderr, "usage: corral logs [-admin ADDR] [-token TOKEN] [-n LINES] [-f=false] [APP]")
		return 2
	}
	app := ""
	if len(rest) == 1 {
		app = rest[0]
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.Logs(ctx, stdout, app, *lines, *follow); err != nil {
		fmt.Fprintf(stderr, "corral: logs from %s: %v\n", c.Addr, err)
		return 1
	}
	if *follow && ctx.Err() == nil {
		fmt.Fprintln(stderr, "corral: the log stream ended (corral stopped)")
	}
	return 0
}
