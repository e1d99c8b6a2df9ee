// Command hello is corral's bundled example app: a tiny web server that says
// which worker answered. corral's default config.hcl runs four of it.
//
// It listens on 127.0.0.1:$PORT (or -port), answers every path with its
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
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	port := flag.Int("port", envInt("PORT", 8000), "port to listen on (default $PORT)")
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
	log.Printf("%s listening on %s", worker, srv.Addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}
