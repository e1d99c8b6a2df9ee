package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http2"
)

// A result is one request the load made.
type result struct {
	kind       string // what was asked: get-keepalive, post-chunked, tunnel, ...
	post       bool   // a POST, not idempotent: corral may not resend it once sent
	start, end time.Time
	pid        int    // the worker that sent the response head (X-Pid), 0 when none came
	fail       string // "" for success, else the failure's kind
}

// load drives the public port with c closed-loop clients, paced to rate
// requests per second in all, until ctx ends.
type load struct {
	base     string // http://127.0.0.1:PORT
	addr     string
	c        int
	rate     int
	timeout  time.Duration
	keep     *http.Client // HTTP/1.1 keep-alive
	fresh    *http.Client // a new connection per request
	h2       *http.Client // h2c, prior knowledge
	mu       sync.Mutex
	results  []result
	inflight sync.WaitGroup
}

func newLoad(addr string, c, rate int, timeout time.Duration) *load {
	l := &load{base: "http://" + addr, addr: addr, c: c, rate: rate, timeout: timeout}
	l.keep = &http.Client{Timeout: timeout, Transport: &http.Transport{MaxIdleConnsPerHost: c, IdleConnTimeout: 30 * time.Second}}
	l.fresh = &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	l.h2 = &http.Client{Timeout: timeout, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
	return l
}

// closeIdle closes the clients' idle connections, so corral can be measured idle.
func (l *load) closeIdle() {
	l.keep.CloseIdleConnections()
	l.fresh.CloseIdleConnections()
	l.h2.CloseIdleConnections()
}

// run loads until ctx ends and waits for the requests in flight.
func (l *load) run(ctx context.Context) {
	tokens := make(chan struct{}, l.c)
	go func() {
		t := time.NewTicker(time.Second / time.Duration(l.rate))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				close(tokens)
				return
			case <-t.C:
				select {
				case tokens <- struct{}{}:
				default:
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < l.c; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for range tokens {
				r := l.one(rng)
				l.mu.Lock()
				l.results = append(l.results, r)
				l.mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
}

// one makes one request of a kind drawn at random and checks its answer.
func (l *load) one(rng *rand.Rand) result {
	seed := rng.IntN(1 << 20)
	// A tenth are slow, so kills and freezes find requests in flight: GETs
	// wait before the head or pause in the middle of the body, POSTs wait
	// before answering.
	delay, pause := "", ""
	if rng.IntN(10) == 0 {
		delay = strconv.Itoa(50+rng.IntN(400)) + "ms"
		if rng.IntN(2) == 0 {
			delay, pause = "", delay
		}
	}
	prefix := ""
	if rng.IntN(3) == 0 {
		prefix = "/sock" // the Unix-socket app
	}
	switch n := rng.IntN(100); {
	case n < 35:
		return l.get("get-keepalive", l.keep, prefix, rng.IntN(4096), seed, delay, pause)
	case n < 45:
		return l.get("get-newconn", l.fresh, prefix, rng.IntN(4096), seed, delay, pause)
	case n < 55:
		return l.get("get-large", l.keep, prefix, 64<<10+rng.IntN(1<<20), seed, delay, pause)
	case n < 65:
		return l.get("get-h2c", l.h2, prefix, rng.IntN(64<<10), seed, delay, pause)
	case n < 80:
		return l.post("post-length", l.keep, prefix, 1+rng.IntN(256<<10), seed, delay, false)
	case n < 88:
		return l.post("post-chunked", l.keep, prefix, 1+rng.IntN(256<<10), seed, delay, true)
	case n < 94:
		return l.post("post-h2c", l.h2, prefix, 1+rng.IntN(64<<10), seed, delay, false)
	default:
		return l.tunnel(prefix, 1+rng.IntN(5))
	}
}

func (l *load) get(kind string, c *http.Client, prefix string, size, seed int, delay, pause string) result {
	r := result{kind: kind, start: time.Now()}
	url := fmt.Sprintf("%s%s/data?size=%d&seed=%d&delay=%s&pause=%s", l.base, prefix, size, seed, delay, pause)
	resp, err := c.Get(url)
	if !r.answered(resp, err) {
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		r.fail = "status " + strconv.Itoa(resp.StatusCode)
	} else if bad := checkPattern(resp.Body, size, seed); bad != "" {
		r.fail = bad
	}
	r.end = time.Now()
	return r
}

// answered notes the worker that sent resp's head, or the failure when none
// came (then it is the end of the request).
func (r *result) answered(resp *http.Response, err error) bool {
	if err != nil {
		r.fail = transportKind(err)
		r.end = time.Now()
		return false
	}
	r.pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	return true
}

// unsized hides a reader's length, so the request goes out chunked.
type unsized struct{ io.Reader }

func (l *load) post(kind string, c *http.Client, prefix string, size, seed int, delay string, chunked bool) result {
	r := result{kind: kind, post: true, start: time.Now()}
	body := make([]byte, size)
	fillPattern(body, seed, 0)
	sum := sha256.Sum256(body)
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = unsized{rd}
	}
	resp, err := c.Post(l.base+prefix+"/echo?delay="+delay, "application/octet-stream", rd)
	if !r.answered(resp, err) {
		return r
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	switch want := fmt.Sprintf("%d %s\n", size, hex.EncodeToString(sum[:])); {
	case resp.StatusCode != http.StatusOK:
		r.fail = "status " + strconv.Itoa(resp.StatusCode)
	case err != nil:
		r.fail = "truncated"
	case string(got) != want:
		r.fail = "body hash differs"
	}
	r.end = time.Now()
	return r
}

// tunnel upgrades a new connection to soak-echo and sends lines through it.
func (l *load) tunnel(prefix string, lines int) (r result) {
	r = result{kind: "tunnel", start: time.Now()} // a GET: corral resends it while no head came
	defer func() { r.end = time.Now() }()
	c, err := net.DialTimeout("tcp", l.addr, l.timeout)
	if err != nil {
		r.fail = transportKind(err)
		return r
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(l.timeout))
	fmt.Fprintf(c, "GET %s/tunnel HTTP/1.1\r\nHost: soak\r\nConnection: Upgrade\r\nUpgrade: soak-echo\r\n\r\n", prefix)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		r.fail = transportKind(err)
		return r
	}
	r.pid, _ = strconv.Atoi(resp.Header.Get("X-Pid"))
	if resp.StatusCode != http.StatusSwitchingProtocols {
		r.fail = "status " + strconv.Itoa(resp.StatusCode)
		return r
	}
	for i := 0; i < lines; i++ {
		msg := fmt.Sprintf("line %d of %d\n", i, lines)
		if _, err := io.WriteString(c, msg); err != nil {
			r.fail = "tunnel broken"
			return r
		}
		got, err := br.ReadString('\n')
		if err != nil {
			r.fail = "tunnel broken"
			return r
		}
		if got != msg {
			r.fail = "tunnel echo differs"
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// transportKind names a failure that came before any response head.
func transportKind(err error) string {
	var ne net.Error
	var se http2.StreamError
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the URL, so failures group by kind
	}
	switch {
	case errors.As(err, &se):
		return "h2 stream reset before the head"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(err.Error(), "EOF"):
		return "closed before the head"
	}
	return "other: " + err.Error()
}
