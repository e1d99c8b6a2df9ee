// Command hello is corral's bundled example app: a tiny web server that says
// which worker answered. corral's default config.hcl runs four of it.
//
// It listens on 127.0.0.1:$PORT (or -port), or on a Unix socket with
// -socket or when $PORT is a path (an app with {socket} in its command, e.g.
// ["hello", "-socket={socket}"]), answers every path with its
// worker id and pid, answers /healthz with 200, and on SIGTERM finishes its
// in-flight requests before exiting, as a well-behaved app should. A
// request with ?delay=100ms waits that long before answering (a slow
// request, for bench/autoscale.sh).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	port := flag.Int("port", envInt("PORT", 8000), "port to listen on (default $PORT)")
	socket := flag.String("socket", envSocket(), "Unix socket path to listen on instead of a port (default $PORT when it is a path)")
	flag.Parse()

	worker := os.Getenv("CORRAL_WORKER")
	if worker == "" {
		worker = "standalone"
	}
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	pid := os.Getpid()
	started := time.Now()

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("delay")); err == nil && d > 0 {
			select {
			case <-time.After(min(d, time.Minute)):
			case <-r.Context().Done():
				return
			}
		}
		if r.Header.Get("Accept") == "application/json" {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{
				"greeting": greeting, "worker": worker, "pid": pid,
				"path": r.URL.Path, "uptime_s": int(time.Since(started).Seconds()),
			})
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s from %s (pid %d)\n", greeting, worker, pid)
	})

	srv := &http.Server{
		Addr:              fmt.Sprintf("127.0.0.1:%d", *port),
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	ln, err := listen(srv.Addr, *socket)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	log.Printf("%s listening on %s", worker, ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
}

// listen opens the Unix socket at socket when it is set, else the TCP addr.
func listen(addr, socket string) (net.Listener, error) {
	if socket != "" {
		return net.Listen("unix", socket)
	}
	return net.Listen("tcp", addr)
}

// envSocket returns $PORT when it is a socket path (it contains a '/').
func envSocket() string {
	if p := os.Getenv("PORT"); strings.Contains(p, "/") {
		return p
	}
	return ""
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
