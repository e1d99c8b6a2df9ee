package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/internal/fdtest"
)

// TestHeldUploadGoesToTheWorkersInRotationWhenItEnds (found by the
// descriptor e2e test: a slow upload across a rolling restart got 503 "no
// worker available"): a body corral holds whole is read before a worker is
// picked, and the pick must use the workers in rotation then, not those of
// when the request arrived. Here the only worker of then is gone (no
// retries) and a new one is in rotation by the time the body ends.
func TestHeldUploadGoesToTheWorkersInRotationWhenItEnds(t *testing.T) {
	const size = 256 << 10
	body := bigBody(size)
	want := fmt.Sprintf("%d %x", size, sha256.Sum256(body))
	for _, tier := range []struct {
		name string
		mod  func(b *config.Buffering)
	}{
		{"memory", nil},
		{"file", func(b *config.Buffering) { b.RequestMemory = 1 << 10 }},
	} {
		t.Run(tier.name, func(t *testing.T) {
			forEngine(t, false, func(t *testing.T, e engine) {
				old := backend(t, func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "old worker") })
				next := startSizedWorker(t)
				var fx *appFixture
				f := startFront(t, e, bufferingSettings(t, tier.mod), func(p *Proxy) []*appFixture {
					a := testApp("web")
					a.Retries = 0
					fx = newFixture(p, a, addrOf(old))
					return []*appFixture{fx}
				})
				pr, pw := io.Pipe()
				go func() {
					pw.Write(body[:size/2])
					// Once corral holds the body (it has its table), the
					// roll: the new worker joins, the old one leaves.
					for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
						if f.proxy.buffers.memory.Load() > 0 || f.proxy.buffers.files.Load() > 0 {
							break
						}
					}
					fx.set(f.proxy, next.addr)
					old.Close()
					pw.Write(body[size/2:])
					pw.Close()
				}()
				req, err := http.NewRequest("POST", f.url("/up"), pr)
				if err != nil {
					t.Fatal(err)
				}
				req.ContentLength = size
				resp, err := f.client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != want {
					t.Fatalf("upload held across the roll: %d %q, want 200 %q", resp.StatusCode, got, want)
				}
			})
		})
	}
}

// TestWorkerDialOutOfDescriptorsIsCorralsOwn: a request whose worker
// connection cannot get a descriptor is answered 503 with Retry-After, not
// retried, and counts neither as a passive-health failure nor as a worker
// error: the worker did nothing wrong.
func TestWorkerDialOutOfDescriptorsIsCorralsOwn(t *testing.T) {
	w := startSizedWorker(t)
	var fx *appFixture
	p := newTestProxy(t, testSettings())
	fx = newFixture(p, func() *config.App {
		a := testApp("web")
		a.Passive.Failures = 1
		return a
	}(), w.addr)
	setApps(p, fx)
	addr := serveOn(t, p, p.Serve)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "the connection accepted", 5*time.Second, func() bool { return p.ConnStats().Open == 1 })

	restore := fdtest.Exhaust(t)
	_, werr := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, rerr := http.ReadResponse(bufio.NewReader(c), nil)
	restore()
	if werr != nil || rerr != nil {
		t.Fatalf("request out of descriptors: %v %v", werr, rerr)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || string(got) != ErrNoDescriptors.Body {
		t.Fatalf("out of descriptors: %d Retry-After %q %q, want 503, 1, %q", resp.StatusCode, resp.Header.Get("Retry-After"), got, ErrNoDescriptors.Body)
	}
	b := fx.backends()[0]
	if n, e := b.ConsecutiveFailures.Load(), b.Stats.Errors.Load(); n != 0 || e != 0 {
		t.Fatalf("the worker was counted %d passive failure(s) and %d error(s) for corral's own shortage", n, e)
	}
}
