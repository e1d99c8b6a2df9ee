package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSSEArrivesEventByEvent(t *testing.T) {
	second := make(chan struct{})
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-second:
		case <-time.After(5 * time.Second):
			return
		}
		_, _ = io.WriteString(w, "data: two\n\n")
	})
	p := newTestProxy(t, testSettings())
	f := newFixture(p, testApp("web"), addrOf(be))
	setApps(p, f)
	url := startProxy(t, p)
	resp, err := client(t).Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: one\n" {
		t.Fatalf("first event %q %v", line, err)
	}
	if f.backends()[0].Inflight.Load() != 1 {
		t.Fatal("stream not counted in flight")
	}
	close(second)
	rest, _ := io.ReadAll(br)
	if string(rest) != "\ndata: two\n\n" {
		t.Fatalf("rest %q", rest)
	}
	waitFor(t, "stream to release its worker", 5*time.Second, func() bool { return f.backends()[0].Inflight.Load() == 0 })
}

func TestClientLeavingStreamIsCounted(t *testing.T) {
	be := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for range 500 {
			if _, err := io.WriteString(w, "data: tick\n\n"); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	var f *appFixture
	apps := func(p *Proxy) []*appFixture {
		f = newFixture(p, testApp("web"), be)
		return []*appFixture{f}
	}
	bothEngines(t, testSettings(), apps, func(t *testing.T, url string) {
		resp, err := client(t).Get(url + "/events")
		if err != nil {
			t.Fatal(err)
		}
		if line, _ := bufio.NewReader(resp.Body).ReadString('\n'); line != "data: tick\n" {
			t.Fatalf("first event %q", line)
		}
		_ = resp.Body.Close()
		waitFor(t, "stream end to be counted", 5*time.Second, func() bool {
			return f.backends()[0].Inflight.Load() == 0 && f.stats.ClientCancelled.Load() == 1
		})
		if f.backends()[0].Stats.Requests.Load() != 1 {
			t.Fatal("stream not observed")
		}
	})
}

func TestLargeBodiesStreamBothWays(t *testing.T) {
	const size = 5 << 20
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Got", fmt.Sprintf("%d %x", n, h.Sum(nil)))
		chunk := bytes.Repeat([]byte("z"), 64<<10)
		for written := 0; written < size; written += len(chunk) {
			_, _ = w.Write(chunk)
		}
	})
	s := testSettings()
	s.MaxBodyBytes = 16 << 20
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), addrOf(be)))
	url := startProxy(t, p)
	body := bytes.Repeat([]byte("abcdefgh"), size/8)
	sum := sha256.Sum256(body)
	for _, chunked := range []bool{false, true} {
		var rd io.Reader = bytes.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // hides the length: sent chunked
		}
		req, _ := http.NewRequest("POST", url+"/up", rd)
		resp, err := client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if want := fmt.Sprintf("%d %x", size, sum); resp.Header.Get("X-Got") != want {
			t.Fatalf("chunked=%v: worker got %q, want %q", chunked, resp.Header.Get("X-Got"), want)
		}
		if n != size {
			t.Fatalf("response body %d bytes, want %d", n, size)
		}
	}
}

func TestSlowUploadIsNotCutByHeaderTimeout(t *testing.T) {
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	})
	s := testSettings()
	s.ResponseHeaderTimeout = 100 * time.Millisecond
	s.DialTimeout = 50 * time.Millisecond
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), addrOf(be)))
	url := startProxy(t, p)
	pr, pw := io.Pipe()
	go func() {
		chunk := make([]byte, 32<<10)
		for range 5 {
			time.Sleep(60 * time.Millisecond) // a slow client, not a wait
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	req, _ := http.NewRequest("PUT", url+"/", pr)
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != fmt.Sprint(5*32<<10) {
		t.Fatalf("slow upload answered %d %q", resp.StatusCode, b)
	}
}

func TestChunkedBodyOverLimitIs413(t *testing.T) {
	be := addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	s := testSettings()
	s.MaxBodyBytes = 64 << 10
	bothEngines(t, s, func(p *Proxy) []*appFixture { return []*appFixture{newFixture(p, testApp("web"), be)} },
		func(t *testing.T, url string) {
			req, _ := http.NewRequest("POST", url+"/", io.MultiReader(bytes.NewReader(make([]byte, 100<<10))))
			resp, err := client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Fatalf("answered %d, want 413", resp.StatusCode)
			}
		})
}

// wsEcho is a minimal WebSocket worker: it completes the handshake and
// echoes small text frames back unmasked.
func wsEcho(t *testing.T) string {
	return addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "want upgrade", 400)
			return
		}
		h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(h[:]))
		_ = brw.Flush()
		for {
			msg, err := readFrame(brw.Reader)
			if err != nil {
				return
			}
			if _, err := c.Write(append([]byte{0x81, byte(len(msg))}, msg...)); err != nil {
				return
			}
		}
	}))
}

// readFrame reads one short frame (payload < 126 bytes), unmasking it.
func readFrame(r *bufio.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(hdr[1] & 0x7f)
	var mask [4]byte
	if hdr[1]&0x80 != 0 {
		if _, err := io.ReadFull(r, mask[:]); err != nil {
			return nil, err
		}
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	if hdr[1]&0x80 != 0 {
		for i := range msg {
			msg[i] ^= mask[i%4]
		}
	}
	return msg, nil
}

func maskedFrame(msg string) []byte {
	mask := [4]byte{1, 2, 3, 4}
	out := []byte{0x81, 0x80 | byte(len(msg))}
	out = append(out, mask[:]...)
	for i := range len(msg) {
		out = append(out, msg[i]^mask[i%4])
	}
	return out
}

// dialWebSocket connects to the proxy and sends a WebSocket handshake.
func dialWebSocket(t *testing.T, url string) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	return c, bufio.NewReader(c)
}

func TestWebSocketEchoThroughProxy(t *testing.T) {
	ws := wsEcho(t)
	var f *appFixture
	apps := func(p *Proxy) []*appFixture {
		f = newFixture(p, testApp("web"), ws)
		return []*appFixture{f}
	}
	bothEngines(t, testSettings(), apps, func(t *testing.T, url string) { testWebSocketEcho(t, url, f) })
}

func testWebSocketEcho(t *testing.T, url string, f *appFixture) {
	c, br := dialWebSocket(t, url)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-Websocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	for _, m := range []string{"hello", "again"} {
		if _, err := c.Write(maskedFrame(m)); err != nil {
			t.Fatal(err)
		}
		got, err := readFrame(br)
		if err != nil || string(got) != m {
			t.Fatalf("echo %q %v, want %q", got, err, m)
		}
	}
	b := f.backends()[0]
	if b.Inflight.Load() != 1 {
		t.Fatalf("tunnel inflight %d, want 1", b.Inflight.Load())
	}
	_ = c.Close()
	waitFor(t, "tunnel to release its worker", 5*time.Second, func() bool { return b.Inflight.Load() == 0 })
}
