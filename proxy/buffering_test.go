package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// sizedWorker serves /big/N: N pseudo-random bytes (with Content-Length,
// or chunked for /big/N?chunked), /small: "ok", and /up: the length and
// sha256 of the request body. It counts requests in flight.
type sizedWorker struct {
	addr     string
	inflight atomic.Int32
}

func bigBody(n int) []byte {
	rnd := rand.New(rand.NewPCG(uint64(n), 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

func startSizedWorker(t *testing.T) *sizedWorker {
	w := &sizedWorker{}
	var bodies sync.Map
	srv := backend(t, func(rw http.ResponseWriter, r *http.Request) {
		w.inflight.Add(1)
		defer w.inflight.Add(-1)
		switch {
		case strings.HasPrefix(r.URL.Path, "/big/"):
			n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/big/"))
			v, _ := bodies.LoadOrStore(n, bigBody(n))
			b := v.([]byte)
			if _, chunked := r.URL.Query()["chunked"]; !chunked {
				rw.Header().Set("Content-Length", strconv.Itoa(n))
			}
			rw.Header().Set("Content-Type", "application/octet-stream")
			_, _ = rw.Write(b)
		case r.URL.Path == "/up":
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(rw, err.Error(), 400)
				return
			}
			fmt.Fprintf(rw, "%d %x", n, h.Sum(nil))
		default:
			_, _ = io.WriteString(rw, "ok")
		}
	})
	w.addr = addrOf(srv)
	return w
}

// oneSlot is an app with one worker that takes one request at a time.
func oneSlot(queueTimeout time.Duration) func(a *config.App) {
	return func(a *config.App) {
		a.MaxInflight = 1
		a.Queue = config.Queue{Size: 16, Timeout: queueTimeout}
		a.Retries = 0
	}
}

func bufferingSettings(t *testing.T, mod func(b *config.Buffering)) config.Proxy {
	s := testSettings()
	s.MaxBodyBytes = 64 << 20
	s.Buffering.Dir = t.TempDir()
	if mod != nil {
		mod(&s.Buffering)
	}
	return s
}

// unbuffered turns response and request buffering off.
func unbuffered(b *config.Buffering) {
	b.ResponseMemory, b.ResponseDisk, b.RequestMemory, b.RequestDisk = 0, 0, 0, 0
}

// TestSlowReaderDoesNotHoldTheWorker: a client that does not read a large
// response must not keep the only worker slot: the next request is served
// at once, and the slow client still gets every byte. With buffering off
// the same scenario makes the next request wait out the queue (503), which
// is what the row shows the test can tell apart.
func TestSlowReaderDoesNotHoldTheWorker(t *testing.T) {
	const size = 16 << 20 // larger than what loopback socket buffers absorb
	for _, mode := range []string{"buffered", "unbuffered"} {
		t.Run(mode, func(t *testing.T) {
			forEngine(t, false, func(t *testing.T, e engine) {
				w := startSizedWorker(t)
				var mod func(*config.Buffering)
				if mode == "unbuffered" {
					mod = unbuffered
				}
				wait := 1500 * time.Millisecond
				if mode == "unbuffered" {
					wait = 500 * time.Millisecond // the queue timeout is what the row waits out
				}
				f := startFront(t, e, bufferingSettings(t, mod), oneApp(oneSlot(wait), w.addr))
				for _, path := range []string{"/big/" + itoa(size), "/big/" + itoa(size) + "?chunked"} {
					resp, err := f.client.Get(f.url(path))
					if err != nil {
						t.Fatal(err)
					}
					// The slow client reads nothing for now.
					start := time.Now()
					_, small, err := f.do(t, "GET", "/small", nil)
					took := time.Since(start)
					if mode == "buffered" {
						if err != nil || string(small) != "ok" {
							t.Fatalf("%s: second request while a slow client holds a response: %q %v", path, small, err)
						}
						t.Logf("%s: second request served in %v", path, took.Round(time.Millisecond))
						waitFor(t, "the worker to be free", 5*time.Second, func() bool { return w.inflight.Load() == 0 })
					} else if err == nil && string(small) == "ok" {
						t.Fatalf("%s: unbuffered, yet the second request was served in %v: the test cannot tell", path, took)
					}
					got, err := io.ReadAll(resp.Body)
					_ = resp.Body.Close()
					if err != nil || sha256.Sum256(got) != sha256.Sum256(bigBody(size)) {
						t.Fatalf("%s: slow client got %d bytes (%v), want all %d intact", path, len(got), err, size)
					}
				}
				if mode == "buffered" {
					waitFor(t, "buffers to be given back", 5*time.Second, func() bool {
						s := f.proxy.BufferStats()
						return s.MemoryBytes == 0 && s.DiskBytes == 0 && s.Files == 0
					})
				}
			})
		})
	}
}

// TestSlowUploaderDoesNotHoldTheWorker: a 512 KiB upload sent slowly is
// read whole before a worker is chosen, so another request is served while
// it trickles in, and the worker gets the body complete. With buffering off
// (and before request_memory, whose fixed bound was 256 KiB) the upload
// holds the only slot and the other request waits out the queue.
func TestSlowUploaderDoesNotHoldTheWorker(t *testing.T) {
	const size = 512 << 10
	body := bigBody(size)
	for _, mode := range []string{"buffered", "unbuffered"} {
		t.Run(mode, func(t *testing.T) {
			forEngine(t, false, func(t *testing.T, e engine) {
				w := startSizedWorker(t)
				var mod func(*config.Buffering)
				if mode == "unbuffered" {
					mod = unbuffered
				}
				f := startFront(t, e, bufferingSettings(t, mod), oneApp(oneSlot(500*time.Millisecond), w.addr))
				pr, pw := io.Pipe()
				req, _ := http.NewRequest("POST", f.url("/up"), pr)
				req.ContentLength = size
				answer := make(chan string, 1)
				go func() {
					resp, err := f.client.Do(req)
					if err != nil {
						answer <- err.Error()
						return
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					answer <- string(b)
				}()
				if _, err := pw.Write(body[:size/2]); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond) // what is sent has arrived
				// Half the body is in; the rest is late. Another request comes.
				_, small, err := f.do(t, "GET", "/small", nil)
				served := err == nil && string(small) == "ok"
				switch {
				case mode == "buffered" && !served:
					t.Fatalf("second request during a slow upload: %q %v", small, err)
				case mode == "buffered" && w.inflight.Load() != 0:
					t.Fatalf("the worker has %d requests while the upload is still arriving", w.inflight.Load())
				case mode == "unbuffered" && served:
					t.Fatal("unbuffered, yet the second request was served: the test cannot tell")
				}
				if _, err := pw.Write(body[size/2:]); err != nil {
					t.Fatal(err)
				}
				_ = pw.Close()
				want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
				if got := <-answer; got != want {
					t.Fatalf("worker got %q, want %q", got, want)
				}
			})
		})
	}
}

// TestUploadTiersArriveIntact: bodies held in memory, held in a temporary
// file, and streamed past both tiers all reach the worker whole, and no
// temporary file is left.
func TestUploadTiersArriveIntact(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		w := startSizedWorker(t)
		s := bufferingSettings(t, func(b *config.Buffering) { b.RequestMemory, b.RequestDisk = 64<<10, 1<<20 })
		f := startFront(t, e, s, oneApp(nil, w.addr))
		for _, size := range []int{1000, 64 << 10, 64<<10 + 1, 1 << 20, 3 << 20} {
			body := bigBody(size)
			_, got, err := f.do(t, "POST", "/up", body)
			want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
			if err != nil || string(got) != want {
				t.Fatalf("size %d: worker got %q (%v), want %q", size, got, err, want)
			}
		}
		if ents, _ := os.ReadDir(s.Buffering.Dir); len(ents) != 0 {
			t.Fatalf("temporary files left: %v", ents)
		}
		waitFor(t, "buffers to be given back", 5*time.Second, func() bool {
			st := f.proxy.BufferStats()
			return st.MemoryBytes == 0 && st.Files == 0
		})
	})
}

// TestBufferedStreamsArriveEventByEvent: a chunked stream goes through the
// spool and still reaches the client piece by piece; an event stream and a
// response marked X-Accel-Buffering: no are not spooled at all.
func TestBufferedStreamsArriveEventByEvent(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		next := make(chan struct{}, 1)
		be := backend(t, func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/sse":
				w.Header().Set("Content-Type", "text/event-stream")
			case "/marked":
				w.Header().Set("X-Accel-Buffering", "no")
			default:
				w.Header().Set("Content-Type", "application/x-ndjson")
			}
			for i := range 3 {
				fmt.Fprintf(w, "event %d\n", i)
				w.(http.Flusher).Flush()
				select {
				case <-next:
				case <-time.After(5 * time.Second):
					return
				}
			}
		})
		f := startFront(t, e, bufferingSettings(t, nil), oneApp(nil, addrOf(be)))
		for _, tc := range []struct {
			path    string
			spooled bool
		}{{"/ndjson", true}, {"/sse", false}, {"/marked", false}} {
			before := f.proxy.BufferStats().Spooled
			resp, err := f.client.Get(f.url(tc.path))
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				if err != nil || line != fmt.Sprintf("event %d\n", i) {
					t.Fatalf("%s: event %d: %q %v", tc.path, i, line, err)
				}
				next <- struct{}{} // the worker sends the next one only now
			}
			_ = resp.Body.Close()
			if spooled := f.proxy.BufferStats().Spooled > before; spooled != tc.spooled {
				t.Fatalf("%s: spooled %v, want %v", tc.path, spooled, tc.spooled)
			}
		}
	})
}

// TestLargeResponseSpillsToDisk: a response past the memory bound goes to a
// temporary file, arrives intact, and the file is gone (unlinked from the
// start, closed at the end).
func TestLargeResponseSpillsToDisk(t *testing.T) {
	const size = 5 << 20
	forEngine(t, false, func(t *testing.T, e engine) {
		w := startSizedWorker(t)
		s := bufferingSettings(t, func(b *config.Buffering) { b.ResponseMemory = 64 << 10 })
		f := startFront(t, e, s, oneApp(nil, w.addr))
		before := f.proxy.BufferStats()
		resp, err := f.client.Get(f.url("/big/" + itoa(size)))
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the response to be spooled", 5*time.Second, func() bool {
			st := f.proxy.BufferStats() // staging is given back when the filler ends
			return w.inflight.Load() == 0 && st.Files == 1 && st.StagingBytes == 0
		})
		mid := f.proxy.BufferStats()
		if mid.Files != 1 || mid.DiskBytes == 0 || mid.MemoryBytes > 64<<10 {
			t.Fatalf("while the client has not read: %+v; want one file with the response and at most 64 KiB in memory", mid)
		}
		if ents, _ := os.ReadDir(s.Buffering.Dir); len(ents) != 0 {
			t.Fatalf("the temporary file has a name: %v", ents)
		}
		got, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || sha256.Sum256(got) != sha256.Sum256(bigBody(size)) {
			t.Fatalf("got %d bytes (%v), want %d intact", len(got), err, size)
		}
		waitFor(t, "the file to be closed", 5*time.Second, func() bool {
			st := f.proxy.BufferStats()
			return st.Files == 0 && st.DiskBytes == 0 && st.MemoryBytes == 0
		})
		if after := f.proxy.BufferStats(); after.Spilled != before.Spilled+1 {
			t.Fatalf("spilled %d -> %d, want one more", before.Spilled, after.Spilled)
		}
		if fds := openSpoolFiles(t); fds != 0 {
			t.Fatalf("%d spool files still open", fds)
		}
	})
}

// openSpoolFiles counts this process's open file descriptors on spool files.
func openSpoolFiles(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.Contains(l, "corral-spool-") {
			n++
		}
	}
	return n
}

// TestManySlowReadersStayUnderTheMemoryLimit: 200 clients that do not read
// their 1 MiB responses; buffered memory never passes memory_limit
// (responses past it stream), and every client then gets its bytes.
func TestManySlowReadersStayUnderTheMemoryLimit(t *testing.T) {
	const (
		clients = 200
		size    = 1 << 20
		limit   = 2 << 20
	)
	w := startSizedWorker(t)
	s := bufferingSettings(t, func(b *config.Buffering) {
		b.ResponseMemory, b.ResponseDisk, b.MemoryLimit = 256<<10, 0, limit
	})
	p := newTestProxy(t, s)
	setApps(p, oneApp(nil, w.addr)(p)...)
	// The kernel would otherwise take megabytes of each response into the
	// socket's send buffer (autotuned up to tcp_wmem), and the proxy would
	// have nothing left to hold.
	addr := serveOn(t, p, func(ln net.Listener) error { return p.Serve(smallSendBuffers{ln}) })
	f := &front{proxy: p, addr: addr}
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if m := f.proxy.BufferStats().MemoryBytes; m > peak.Load() {
				peak.Store(m)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	conns := make([]net.Conn, clients)
	for i := range conns {
		c, err := net.Dial("tcp", f.addr)
		if err != nil {
			t.Fatal(err)
		}
		// Small, but not below the loopback segment size (32 KiB with
		// 64 KiB MTU): smaller makes the kernel drop segments and back off.
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		t.Cleanup(func() { _ = c.Close() })
		fmt.Fprintf(c, "GET /big/%d HTTP/1.1\r\nHost: h.test\r\n\r\n", size)
		conns[i] = c
	}
	time.Sleep(500 * time.Millisecond) // every response in, none read
	want := sha256.Sum256(bigBody(size))
	for i, c := range conns {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil || sha256.Sum256(got) != want {
			t.Fatalf("client %d: %d bytes (%v), want %d intact", i, len(got), err, size)
		}
		_ = c.Close()
	}
	close(stop)
	<-sampled
	t.Logf("peak buffered memory %d KiB of a %d KiB limit", peak.Load()>>10, limit>>10)
	if peak.Load() > limit {
		t.Fatalf("buffered memory reached %d, past the %d limit", peak.Load(), limit)
	}
	if peak.Load() < limit/2 {
		t.Fatalf("peak %d: the limit was never approached, the test measured nothing", peak.Load())
	}
	waitFor(t, "buffers to be given back", 5*time.Second, func() bool { return f.proxy.BufferStats().MemoryBytes == 0 })
}

// smallSendBuffers gives accepted connections a fixed 64 KiB send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(64 << 10)
	}
	return c, err
}

// TestConformanceHeldBodiesReachTheWorkerAsSent: a body held in memory, one
// held in a temporary file and one streamed past both tiers reach the
// worker with one Content-Length of the body's size, no Transfer-Encoding,
// and every byte (length and hash, recorded by hand-parsing HTTP/1.1).
func TestConformanceHeldBodiesReachTheWorkerAsSent(t *testing.T) {
	forEngine(t, false, func(t *testing.T, e engine) {
		rec := newRecorder(t, nil)
		s := bufferingSettings(t, func(b *config.Buffering) { b.RequestMemory, b.RequestDisk = 64<<10, 1<<20 })
		f := startFront(t, e, s, oneApp(nil, rec.addr))
		for _, tc := range []struct {
			tier string
			size int
		}{{"memory", 64 << 10}, {"file", 1 << 20}, {"streamed", 1<<20 + 1}} {
			body := bigBody(tc.size)
			resp, _, err := f.do(t, "POST", "/up", body, "Content-Type", "application/octet-stream")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s: %v %v", tc.tier, resp, err)
			}
			r := last(t, rec)
			if got := r.header("Content-Length"); len(got) != 1 || got[0] != itoa(tc.size) {
				t.Errorf("%s: Content-Length lines %q, want one of %d: %q", tc.tier, got, tc.size, r.headers)
			}
			if te := r.header("Transfer-Encoding"); len(te) != 0 {
				t.Errorf("%s: Transfer-Encoding %q added", tc.tier, te)
			}
			if ct := r.header("Content-Type"); len(ct) != 1 || ct[0] != "application/octet-stream" {
				t.Errorf("%s: Content-Type lines %q", tc.tier, ct)
			}
			if !r.complete || r.bodyLen != tc.size || r.bodySum != sum(body) {
				t.Errorf("%s: worker got %d bytes (complete %v), want %d with the same hash", tc.tier, r.bodyLen, r.complete, tc.size)
			}
		}
		if st := f.proxy.BufferStats(); st.Files != 0 || st.MemoryBytes != 0 || st.DiskBytes != 0 {
			t.Errorf("held bodies not given back: %+v", st)
		}
	})
}
