// Command testapp is the worker app of corral's end-to-end tests.
//
// It serves on 127.0.0.1:$PORT: "/" answers JSON with its worker id, pid and
// $GREETING; "/healthz" answers 503 while the file $HEALTH_FAIL_FILE exists;
// "/ws" is a WebSocket echo; "/slow?ms=N" answers after N ms.
// TESTAPP_MODE=never-ready never listens; TESTAPP_MODE=crash exits at once.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
)

func main() {
	switch os.Getenv("TESTAPP_MODE") {
	case "never-ready":
		select {}
	case "crash":
		fmt.Fprintln(os.Stderr, "testapp: crashing on purpose")
		os.Exit(3)
	}
	worker, pid := os.Getenv("CORRAL_WORKER"), os.Getpid()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if f := os.Getenv("HEALTH_FAIL_FILE"); f != "" {
			if _, err := os.Stat(f); err == nil {
				http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintln(w, "slow done")
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"worker": worker, "pid": pid, "greeting": os.Getenv("GREETING"),
		})
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}
