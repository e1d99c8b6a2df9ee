package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
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

// worker is the app corral supervises in the soak: every answer names the
// worker (X-Worker, X-Pid) in its head, so a failure after the head can be
// put on the process that sent it.
//
//	/healthz              200 ok
//	/data?size=N&seed=S&delay=D&pause=P  after D, the N bytes of pattern(S),
//	                      with a pause of P after the first half
//	/echo (POST)          reads the body, waits delay, answers its length and sha256
//	/tunnel (Upgrade: soak-echo)  101, then echoes each line back until the client closes
func worker(args []string) {
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	port := fs.String("port", os.Getenv("PORT"), "TCP port on 127.0.0.1")
	socket := fs.String("socket", "", "Unix socket path instead of a port")
	_ = fs.Parse(args)

	id, pid := os.Getenv("CORRAL_WORKER"), strconv.Itoa(os.Getpid())
	mark := func(w http.ResponseWriter) {
		w.Header().Set("X-Worker", id)
		w.Header().Set("X-Pid", pid)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		size, _ := strconv.Atoi(q.Get("size"))
		seed, _ := strconv.Atoi(q.Get("seed"))
		delay, _ := time.ParseDuration(q.Get("delay"))
		pause, _ := time.ParseDuration(q.Get("pause"))
		if !sleepCtx(r.Context(), delay) {
			return
		}
		mark(w)
		w.Header().Set("Content-Length", strconv.Itoa(size))
		buf := make([]byte, 32<<10)
		write := func(from, to int) bool {
			for off := from; off < to; {
				n := min(len(buf), to-off)
				fillPattern(buf[:n], seed, off)
				if _, err := w.Write(buf[:n]); err != nil {
					return false
				}
				off += n
			}
			return true
		}
		if pause > 0 { // half the body, a pause, the rest: a kill in the pause cuts the body
			if !write(0, size/2) || http.NewResponseController(w).Flush() != nil || !sleepCtx(r.Context(), pause) {
				return
			}
			write(size/2, size)
			return
		}
		write(0, size)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		delay, _ := time.ParseDuration(r.URL.Query().Get("delay"))
		if !sleepCtx(r.Context(), delay) {
			return
		}
		mark(w)
		fmt.Fprintf(w, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
	})
	mux.HandleFunc("/tunnel", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "soak-echo") {
			http.Error(w, "upgrade to soak-echo", http.StatusBadRequest)
			return
		}
		c, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: soak-echo\r\nX-Worker: %s\r\nX-Pid: %s\r\n\r\n", id, pid)
		if rw.Flush() != nil {
			return
		}
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		for {
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := rw.WriteString(line); err != nil || rw.Flush() != nil {
				return
			}
		}
	})

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	var ln net.Listener
	var err error
	if *socket != "" {
		ln, err = net.Listen("unix", *socket)
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:"+*port)
	}
	if err != nil {
		log.Fatalf("worker: listen: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("worker: %v", err)
	}
}

// background is the serve=false app: it waits for its stop signal.
func background() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// fillPattern writes the bytes at offsets off.. of the body for seed.
func fillPattern(b []byte, seed, off int) {
	for i := range b {
		b[i] = byte((off+i)*7 + seed*13 + (off+i)>>10)
	}
}

// checkPattern reads r to the end and reports whether it is exactly the
// size bytes of pattern(seed): "" when it is, else what was wrong.
func checkPattern(r io.Reader, size, seed int) string {
	br := bufio.NewReaderSize(r, 32<<10)
	want := make([]byte, 32<<10)
	got := make([]byte, 32<<10)
	off := 0
	for {
		n, err := br.Read(got)
		if n > 0 {
			if off+n > size {
				return "body longer than asked"
			}
			fillPattern(want[:n], seed, off)
			if string(want[:n]) != string(got[:n]) {
				return "body bytes differ"
			}
			off += n
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "truncated"
		}
	}
	if off != size {
		return "truncated"
	}
	return ""
}
