// Command testapp is the worker app of corral's end-to-end tests.
//
// It serves on 127.0.0.1:$PORT (on the Unix socket $PORT when it is a
// path, as for an app with {socket}): "/" answers JSON with its worker id, pid and
// $GREETING; "/ws" is a WebSocket echo; "/slow?ms=N" answers after N ms;
// "/concurrency" answers the most requests it ever had at once, and
// "/inflight" how many it has now (neither counts itself or /healthz);
// "/say?msg=M" prints M on its standard output; "/env?name=N" answers
// the value of its environment variable N; "/environ" its whole
// environment, one NAME=value a line; "/fds" the descriptors it was started
// with (those not close-on-exec), one "N -> target" a line; "/upload"
// answers "N HASH", the length and SHA-256 of the body it read;
// "/bytes?n=N" answers N bytes of a fixed pattern, their SHA-256 in
// X-Body-Sha256; "/alloc?mib=N" allocates N MiB,
// touches every page and keeps it; "/spin?ms=N" keeps a CPU busy until the
// process used N ms more CPU time; "/garbage?kind=K" answers bytes that are
// no HTTP response (see garbage); "/cut?chunked=1" declares a 1 MiB body
// (Content-Length, or chunked) and closes after half of it;
// "/flood?ms=N" writes lines to its standard output as fast as it can for
// N ms, then answers how many bytes ("&endless=1": one endless line, to
// its standard error).
// With $SWITCH_DIR set, the file fail-$CORRAL_WORKER there makes "/healthz"
// answer 503, and hang-$CORRAL_WORKER makes every request wait until the
// file is gone (a hung worker that recovers).
// TESTAPP_MODE=never-ready never listens; TESTAPP_MODE=crash exits at once;
// TESTAPP_MODE=ignore-term ignores SIGTERM; TESTAPP_MODE=slow-term takes
// 300 ms to handle SIGTERM, then writes the file term-$CORRAL_WORKER into
// $MARKER_DIR (proof that its handler ran to the end) and exits.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/websocket"
)

// garbage are answers that are not HTTP, by the kind /garbage names.
var garbage = map[string]string{
	"binary":     "\x00\x01\x02\xff\xfe garbage \x7f\x80\r\n\r\n",
	"status999":  "HTTP/1.1 999 xx\r\nContent-Length: 2\r\n\r\nok",
	"statusword": "HTTP/1.1 OK fine\r\nContent-Length: 2\r\n\r\nok",
	"nocolon":    "HTTP/1.1 200 OK\r\nX-Broken header line\r\nContent-Length: 2\r\n\r\nok",
	"badlength":  "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
	"twolengths": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
	"hugeheader": "HTTP/1.1 200 OK\r\nX-Huge: " + strings.Repeat("h", 1<<20) + "\r\nContent-Length: 2\r\n\r\nok",
	"nothing":    "",
	"headonly":   "HTTP/1.1 200 OK\r\nContent-Len",
}

// writeRaw hijacks the connection, writes raw and closes it.
func writeRaw(w http.ResponseWriter, raw string) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	conn.Write([]byte(raw))
	conn.Close()
}

// grown keeps what /grow and /alloc allocated resident.
var grown [][]byte

// grow allocates mib MiB with every page touched, and keeps it.
func grow(mib int) {
	b := make([]byte, mib<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	grown = append(grown, b)
}

// inheritedFDs lists the process's descriptors that are not close-on-exec,
// one "N -> target" a line. The Go runtime opens all of its own (epoll,
// cgroup files, sockets) close-on-exec and exec keeps the flag as it was,
// so these are exactly the descriptors the process was started with.
func inheritedFDs() string {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return "error " + err.Error() + "\n"
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	var b strings.Builder
	for _, n := range names {
		info, err := os.ReadFile("/proc/self/fdinfo/" + n)
		if err != nil {
			continue // the directory's own descriptor, already closed
		}
		var flags uint64
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			}
		}
		if flags&syscall.O_CLOEXEC != 0 {
			continue
		}
		target, _ := os.Readlink("/proc/self/fd/" + n)
		fmt.Fprintf(&b, "%s -> %s\n", n, target)
	}
	return b.String()
}

func main() {
	switch os.Getenv("TESTAPP_MODE") {
	case "never-ready":
		select {}
	case "crash":
		fmt.Fprintln(os.Stderr, "testapp: crashing on purpose")
		os.Exit(3)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	}
	worker, pid := os.Getenv("CORRAL_WORKER"), os.Getpid()
	switchOn := func(name string) bool {
		dir := os.Getenv("SWITCH_DIR")
		if dir == "" {
			return false
		}
		_, err := os.Stat(filepath.Join(dir, name+"-"+worker))
		return err == nil
	}
	var inflight, most atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if switchOn("fail") {
			http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/concurrency", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, most.Load())
	})
	mux.HandleFunc("/inflight", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, inflight.Load())
	})
	mux.HandleFunc("/grow", func(w http.ResponseWriter, r *http.Request) {
		grow(64) // a leak for max_memory
		fmt.Fprintln(w, os.Getenv("CORRAL_WORKER"))
	})
	mux.HandleFunc("/alloc", func(w http.ResponseWriter, r *http.Request) {
		mib, _ := strconv.Atoi(r.URL.Query().Get("mib"))
		grow(mib)
		fmt.Fprintln(w, os.Getenv("CORRAL_WORKER"))
	})
	mux.HandleFunc("/spin", func(w http.ResponseWriter, r *http.Request) {
		// CPU time, not wall time: on a busy machine the loop gets less.
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		cpu := func() time.Duration {
			var ru syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
			return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		n, end := 0, cpu()+time.Duration(ms)*time.Millisecond
		for deadline := time.Now().Add(30 * time.Second); cpu() < end && time.Now().Before(deadline); {
			n++
		}
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		time.Sleep(time.Duration(ms) * time.Millisecond)
		fmt.Fprintln(w, "slow done")
	})
	mux.HandleFunc("/say", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(r.URL.Query().Get("msg"))
		fmt.Fprintln(w, "said")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		v, ok := os.LookupEnv(r.URL.Query().Get("name"))
		fmt.Fprintf(w, "%v %s\n", ok, v)
	})
	mux.HandleFunc("/garbage", func(w http.ResponseWriter, r *http.Request) {
		raw, ok := garbage[r.URL.Query().Get("kind")]
		if !ok {
			http.Error(w, "unknown kind", http.StatusNotFound)
			return
		}
		writeRaw(w, raw)
	})
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		half := strings.Repeat("c", 512<<10)
		if r.URL.Query().Get("chunked") == "1" {
			writeRaw(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+fmt.Sprintf("%x\r\n%s\r\n", len(half), half))
			return
		}
		writeRaw(w, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", 2*len(half), half))
	})
	mux.HandleFunc("/flood", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		out, chunk := os.Stdout, []byte(strings.Repeat("flooding the log with one line after another\n", 100))
		if r.URL.Query().Get("endless") == "1" {
			out, chunk = os.Stderr, []byte(strings.Repeat("x", len(chunk)))
		}
		n := 0
		for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
			k, _ := out.Write(chunk)
			n += k
		}
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("/environ", func(w http.ResponseWriter, r *http.Request) {
		for _, kv := range os.Environ() {
			fmt.Fprintln(w, kv)
		}
	})
	mux.HandleFunc("/fds", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, inheritedFDs())
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%d %x\n", n, h.Sum(nil))
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + i>>10)
		}
		sum := sha256.Sum256(b)
		w.Header().Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"worker": worker, "pid": pid, "greeting": os.Getenv("GREETING"),
		})
	})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Health probes bypass max_inflight by design; only app requests count.
		if r.URL.Path != "/concurrency" && r.URL.Path != "/inflight" && r.URL.Path != "/healthz" {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
		}
		for deadline := time.Now().Add(30 * time.Second); switchOn("hang") && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		mux.ServeHTTP(w, r)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT)
		if os.Getenv("TESTAPP_MODE") != "ignore-term" {
			signal.Notify(sig, syscall.SIGTERM)
		}
		<-sig
		if os.Getenv("TESTAPP_MODE") == "slow-term" {
			time.Sleep(300 * time.Millisecond) // the app's own cleanup
			marker := filepath.Join(os.Getenv("MARKER_DIR"), "term-"+worker)
			if err := os.WriteFile(marker, []byte(time.Now().Format(time.RFC3339Nano)), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "testapp:", err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	network, addr := "tcp", srv.Addr
	if p := os.Getenv("PORT"); strings.HasPrefix(p, "/") {
		network, addr = "unix", p
	}
	ln, err := net.Listen(network, addr)
	if err == nil {
		err = srv.Serve(ln)
	}
	if err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
}
