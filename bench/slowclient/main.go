// Command slowclient is the worker and the load clients of bench/slow.sh.
//
//	slowclient worker [-port N] [-serial]
//	    an app worker on 127.0.0.1:$PORT: /healthz, /small (a few bytes),
//	    /big?size=N (N bytes, with Content-Length), /upload (reads the body,
//	    answers its length). Routes match the last path element, so /bulk/big
//	    is /big. With -serial it handles one request at a time (a mutex held
//	    for the whole handler, body read and write included), like a
//	    single-threaded app; /healthz does not wait for it.
//	slowclient fast -url URL [-c 4] [-d 6s] [-timeout 2s]
//	    closed-loop GETs on c keep-alive connections for d; each request is
//	    given up after timeout. Prints one line of key=value results.
//	slowclient size 1m
//	    prints 1048576 (the sizes the other commands accept: 64k, 1m, 1MiB).
//	slowclient slow -url URL -mode read|upload [-n 20] [-rate 64k] [-size 512k] [-d 8s]
//	    n clients, each on its own connection with small socket buffers:
//	    read mode downloads URL reading at most rate bytes/s; upload mode
//	    POSTs size bytes sent at most at rate. Each repeats until d is over,
//	    when every connection is closed. Prints one line of key=value results.
//
// Everything is bounded in time: every connection has a deadline at the end
// of the run, and every request of fast a per-request timeout.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: slowclient worker|fast|slow [flags]")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "worker":
		worker(args)
	case "fast":
		fast(args)
	case "slow":
		slow(args)
	case "size": // slowclient size 1m: prints 1048576, for the script
		if len(args) != 1 {
			log.Fatal("usage: slowclient size SIZE")
		}
		n, err := parseSize(args[0])
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(n)
	default:
		log.Fatalf("unknown command %q", os.Args[1])
	}
}

// parseSize reads 65536, 64k, 64K, 64KiB, 1m, 1MiB (k and m are 1024 and 1024²).
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), "ib"), "b")
	mult := int64(1)
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1<<10, strings.TrimSuffix(t, "k")
	case strings.HasSuffix(t, "m"):
		mult, t = 1<<20, strings.TrimSuffix(t, "m")
	case strings.HasSuffix(t, "g"):
		mult, t = 1<<30, strings.TrimSuffix(t, "g")
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

type sizeFlag struct{ n int64 }

func (f *sizeFlag) String() string { return strconv.FormatInt(f.n, 10) }
func (f *sizeFlag) Set(s string) (err error) {
	f.n, err = parseSize(s)
	return err
}

// --- worker -----------------------------------------------------------------

func worker(args []string) {
	fs := flag.NewFlagSet("worker", flag.ExitOnError)
	defPort, _ := strconv.Atoi(os.Getenv("PORT"))
	port := fs.Int("port", defPort, "port (default $PORT)")
	serial := fs.Bool("serial", false, "one request at a time")
	fs.Parse(args)
	if *port == 0 {
		log.Fatal("worker: no -port and no $PORT")
	}
	pattern := make([]byte, 64<<10)
	for i := range pattern {
		pattern[i] = 'a' + byte(i%26)
	}
	var mu sync.Mutex
	h := func(w http.ResponseWriter, r *http.Request) {
		name := path.Base(r.URL.Path)
		if name == "healthz" {
			io.WriteString(w, "ok\n")
			return
		}
		if *serial {
			mu.Lock()
			defer mu.Unlock()
		}
		switch name {
		case "small":
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "ok\n")
		case "big":
			n, err := parseSize(r.URL.Query().Get("size"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			for n > 0 {
				k := min(n, int64(len(pattern)))
				if _, err := w.Write(pattern[:k]); err != nil {
					return
				}
				n -= k
			}
		case "upload":
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintf(w, "got %d\n", n)
		default:
			http.NotFound(w, r)
		}
	}
	srv := &http.Server{
		Addr:              fmt.Sprintf("127.0.0.1:%d", *port),
		Handler:           http.HandlerFunc(h),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(c) != nil {
			srv.Close()
		}
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("worker: %v", err)
	}
}

// --- fast clients -------------------------------------------------------------

func fast(args []string) {
	fs := flag.NewFlagSet("fast", flag.ExitOnError)
	target := fs.String("url", "", "URL to GET")
	conns := fs.Int("c", 4, "connections (one request at a time each)")
	dur := fs.Duration("d", 6*time.Second, "run time")
	timeout := fs.Duration("timeout", 2*time.Second, "per request, then the request counts as timed out and its connection is closed")
	fs.Parse(args)
	if *target == "" {
		log.Fatal("fast: -url is required")
	}
	tr := &http.Transport{
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		DisableCompression:  true,
		DialContext:         (&net.Dialer{Timeout: *timeout}).DialContext,
	}
	client := &http.Client{Transport: tr, Timeout: *timeout}
	type result struct {
		lat                        []time.Duration
		ok, non2xx, timeouts, errs int
		lastErr                    string
	}
	res := make([]result, *conns)
	start := time.Now()
	end := start.Add(*dur)
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func(r *result) {
			defer wg.Done()
			for time.Now().Before(end) {
				t0 := time.Now()
				resp, err := client.Get(*target)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				el := time.Since(t0)
				r.lat = append(r.lat, el)
				var ne net.Error
				switch {
				case err != nil && errors.As(err, &ne) && ne.Timeout():
					r.timeouts++
				case err != nil:
					r.errs++
					r.lastErr = err.Error()
					time.Sleep(10 * time.Millisecond) // no tight loop on refused connections
				case resp.StatusCode/100 != 2:
					r.non2xx++
				default:
					r.ok++
				}
			}
		}(&res[i])
	}
	wg.Wait()
	var all []time.Duration
	var ok, non2xx, timeouts, errs int
	lastErr := ""
	for _, r := range res {
		all = append(all, r.lat...)
		ok, non2xx, timeouts, errs = ok+r.ok, non2xx+r.non2xx, timeouts+r.timeouts, errs+r.errs
		if r.lastErr != "" {
			lastErr = r.lastErr
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000
	}
	fmt.Printf("requests=%d ok=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f non2xx=%d timeouts=%d errors=%d\n",
		len(all), ok, float64(ok)/dur.Seconds(), pct(0.50), pct(0.99), non2xx, timeouts, errs)
	if lastErr != "" {
		log.Printf("fast: last error: %s", lastErr)
	}
}

// --- slow clients -------------------------------------------------------------

// pacer holds a transfer to rate bytes/s: after k bytes it waits k/rate, and a
// pause (waiting for the server) earns no burst afterwards.
type pacer struct {
	rate float64
	next time.Time
}

func (p *pacer) wait() {
	if d := time.Until(p.next); d > 0 {
		time.Sleep(d)
	}
}

func (p *pacer) done(k int) {
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	p.next = p.next.Add(time.Duration(float64(k) / p.rate * float64(time.Second)))
}

// pacedReader reads at most chunk bytes at a time, paced.
type pacedReader struct {
	r     io.Reader
	p     *pacer
	chunk int
}

func (r *pacedReader) Read(b []byte) (int, error) {
	if len(b) > r.chunk {
		b = b[:r.chunk]
	}
	r.p.wait()
	k, err := r.r.Read(b)
	r.p.done(k)
	return k, err
}

type slowStats struct {
	mu                          sync.Mutex
	ok, non2xx, errs, cut, done int
	bytes                       int64
	active                      time.Duration // time spent moving body bytes
	waiting                     time.Duration // time from request sent to response head, over completed heads
	heads                       int
	lastErr                     string
}

func slow(args []string) {
	fs := flag.NewFlagSet("slow", flag.ExitOnError)
	target := fs.String("url", "", "URL")
	mode := fs.String("mode", "read", "read (slow download) or upload (slow POST body)")
	n := fs.Int("n", 20, "clients")
	rate := &sizeFlag{64 << 10}
	fs.Var(rate, "rate", "bytes/s per client (64k = 65536)")
	size := &sizeFlag{512 << 10}
	fs.Var(size, "size", "upload body size")
	dur := fs.Duration("d", 8*time.Second, "run time; then every connection is closed")
	bufSize := fs.Int("sockbuf", 8192, "SO_RCVBUF (read) or SO_SNDBUF (upload) asked of the kernel (it doubles it)")
	fs.Parse(args)
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		log.Fatalf("slow: bad -url %q", *target)
	}
	if rate.n <= 0 {
		log.Fatal("slow: -rate must be positive")
	}
	opt := syscall.SO_RCVBUF
	if *mode == "upload" {
		opt = syscall.SO_SNDBUF
	} else if *mode != "read" {
		log.Fatalf("slow: bad -mode %q", *mode)
	}
	dialer := &net.Dialer{
		Timeout: 2 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, *bufSize) })
			if err != nil {
				return err
			}
			return serr
		},
	}
	end := time.Now().Add(*dur)
	st := &slowStats{}
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				oneSlow(dialer, u, *mode, float64(rate.n), size.n, end, st)
			}
		}()
	}
	wg.Wait()
	// per client over the whole run, and per client while a body was moving
	perClient := float64(st.bytes) / float64(*n) / dur.Seconds() / 1024
	active, wait := 0.0, 0.0
	if st.active > 0 {
		active = float64(st.bytes) / st.active.Seconds() / 1024
	}
	if st.heads > 0 {
		wait = st.waiting.Seconds() / float64(st.heads)
	}
	fmt.Printf("clients=%d heads=%d ok=%d non2xx=%d complete=%d cut=%d errors=%d bytes=%d kib_s_per_client=%.1f kib_s_active=%.1f mean_wait_s=%.2f\n",
		*n, st.heads, st.ok, st.non2xx, st.done, st.cut, st.errs, st.bytes, perClient, active, wait)
	if st.lastErr != "" {
		log.Printf("slow: last error: %s", st.lastErr)
	}
}

// oneSlow does one slow transfer on a new connection; all of it ends by end.
func oneSlow(d *net.Dialer, u *url.URL, mode string, rate float64, size int64, end time.Time, st *slowStats) {
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		st.fail(err, end)
		time.Sleep(50 * time.Millisecond)
		return
	}
	defer conn.Close()
	conn.SetDeadline(end)
	p := &pacer{rate: rate}
	chunk := max(1024, int(rate/20)) // about 20 reads or writes a second
	var bytes int64
	var active time.Duration
	defer func() {
		st.mu.Lock()
		st.bytes += bytes
		st.active += active
		st.mu.Unlock()
	}()
	if mode == "upload" {
		head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", u.RequestURI(), u.Host, size)
		if _, err := io.WriteString(conn, head); err != nil {
			st.fail(err, end)
			return
		}
		buf := make([]byte, chunk)
		for i := range buf {
			buf[i] = 'u'
		}
		t0 := time.Now()
		for left := size; left > 0; {
			p.wait()
			k, err := conn.Write(buf[:min(left, int64(len(buf)))])
			bytes += int64(k)
			left -= int64(k)
			p.done(k)
			if err != nil {
				active += time.Since(t0)
				st.fail(err, end)
				return
			}
		}
		active += time.Since(t0)
		t1 := time.Now()
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			st.fail(err, end)
			return
		}
		st.head(time.Since(t1), resp.StatusCode)
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			st.fail(err, end)
			return
		}
		st.complete()
		return
	}
	head := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.RequestURI(), u.Host)
	if _, err := io.WriteString(conn, head); err != nil {
		st.fail(err, end)
		return
	}
	t1 := time.Now()
	br := bufio.NewReaderSize(&pacedReader{r: conn, p: p, chunk: chunk}, chunk)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		st.fail(err, end)
		return
	}
	t0 := time.Now()
	st.head(t0.Sub(t1), resp.StatusCode)
	k, err := io.Copy(io.Discard, resp.Body)
	bytes += k
	active += time.Since(t0)
	if err != nil {
		st.fail(err, end)
		return
	}
	st.complete()
}

// head counts a response head: 2xx or not, and how long it took to come.
func (st *slowStats) head(wait time.Duration, status int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.heads++
	st.waiting += wait
	if status/100 == 2 {
		st.ok++
	} else {
		st.non2xx++
	}
}

// complete counts a transfer that ended with the whole response read.
func (st *slowStats) complete() {
	st.mu.Lock()
	st.done++
	st.mu.Unlock()
}

// fail counts an error, or a transfer cut by the end of the run.
func (st *slowStats) fail(err error, end time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !time.Now().Before(end.Add(-50 * time.Millisecond)) {
		st.cut++
		return
	}
	st.errs++
	st.lastErr = err.Error()
}
