package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/corral-dev/corral/config"
)

// selfSigned writes a certificate for 127.0.0.1 and returns its paths and pool.
func selfSigned(t *testing.T) (certFile, keyFile string, roots *x509.CertPool) {
	return selfSignedNamed(t, "corral test")
}

func selfSignedNamed(t *testing.T, name string) (certFile, keyFile string, roots *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// echoProto is a worker that reports the forwarded proto and the path.
func echoProto(t *testing.T) string {
	return addrOf(backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Forwarded-Proto")+" "+r.URL.Path)
	}))
}

func TestTLSServesHTTP2(t *testing.T) {
	certFile, keyFile, roots := selfSigned(t)
	s := testSettings()
	s.TLS = &config.TLS{Cert: certFile, Key: keyFile}
	p := newTestProxy(t, s)
	f := newFixture(p, testApp("web"), echoProto(t))
	setApps(p, f)
	addr := serveOn(t, p, p.ServeTLS)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "https /x" {
		t.Fatalf("got proto %d status %d body %q", resp.ProtoMajor, resp.StatusCode, body)
	}
	if f.backends()[0].Stats.Requests.Load() != 1 || f.backends()[0].Inflight.Load() != 0 {
		t.Fatal("request not accounted")
	}
	tr.CloseIdleConnections()
}

func TestTLSCertificateRereadOnSetSettings(t *testing.T) {
	cert1, key1, _ := selfSignedNamed(t, "first")
	cert2, key2, _ := selfSignedNamed(t, "second")
	s := testSettings()
	s.TLS = &config.TLS{Cert: cert1, Key: key1}
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), echoProto(t)))
	addr := serveOn(t, p, p.ServeTLS)
	served := func() string {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := served(); got != "first" {
		t.Fatalf("served %q", got)
	}
	s2 := s
	s2.TLS = &config.TLS{Cert: cert2, Key: key2}
	p.SetSettings(s2)
	if got := served(); got != "second" {
		t.Fatalf("after SetSettings served %q", got)
	}
	s3 := s
	s3.TLS = &config.TLS{Cert: cert2 + ".missing", Key: key2}
	p.SetSettings(s3)
	if got := served(); got != "second" {
		t.Fatalf("after a failing reload served %q, want the previous certificate", got)
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	s := testSettings()
	s.H2C = true
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), echoProto(t)))
	url := startProxy(t, p)
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url + "/h2")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "http /h2" {
		t.Fatalf("h2c: proto %d body %q", resp.ProtoMajor, body)
	}
	// HTTP/1.1 still works on the same listener.
	code, body1, _ := get(t, client(t), url+"/one")
	if code != 200 || body1 != "http /one" {
		t.Fatalf("http/1.1 beside h2c: %d %q", code, body1)
	}
	tr.CloseIdleConnections()
}

func TestShutdownWaitsForInflightRequest(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	be := backend(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(w, "finished")
	})
	p := newTestProxy(t, testSettings())
	setApps(p, newFixture(p, testApp("web"), addrOf(be)))
	url := startProxy(t, p)
	type res struct {
		code int
		body string
		err  error
	}
	out := make(chan res, 1)
	go func() {
		resp, err := http.Get(url + "/slow")
		if err != nil {
			out <- res{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		out <- res{code: resp.StatusCode, body: string(b)}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- p.Shutdown(ctx)
	}()
	addr := strings.TrimPrefix(url, "http://")
	waitFor(t, "listener to close", 5*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	r := <-out
	if r.err != nil || r.code != 200 || r.body != "finished" {
		t.Fatalf("in-flight request: %+v", r)
	}
	if err := <-shut; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestShutdownClosesStreamsAtDeadline(t *testing.T) {
	p := newTestProxy(t, testSettings())
	f := newFixture(p, testApp("web"), wsEcho(t))
	setApps(p, f)
	url := startProxy(t, p)
	_, br := dialWebSocket(t, url)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); err == nil {
		t.Fatal("shutdown reported success with a tunnel still open")
	}
	waitFor(t, "tunnel closed by shutdown", 5*time.Second, func() bool { return f.backends()[0].Inflight.Load() == 0 })
}

// TestTLSHTTP1OnTheFastEngine: ALPN gives HTTP/1.1 over TLS to the same
// engine as plain HTTP/1.1, so a worker receives the same request either
// way (header lines in the client's order, as the fasthttp engine keeps
// them; net/http would sort them), with X-Forwarded-Proto saying https.
func TestTLSHTTP1OnTheFastEngine(t *testing.T) {
	const raw = "GET /order HTTP/1.1\r\nHost: h.test\r\nZeta: 1\r\nAlpha: 2\r\nMid: 3\r\nX-Forwarded-Proto: spoofed\r\n\r\n"
	lines := map[string][]string{}
	for _, e := range []engine{engines[0], engines[1]} {
		rec := newRecorder(t, nil)
		f := startFront(t, e, testSettings(), oneApp(nil, rec.addr))
		c := f.dial(t)
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d %q", e.name, resp.StatusCode, body)
		}
		r := last(t, rec)
		var own []string
		for _, l := range r.headers {
			k, _, _ := strings.Cut(l, ":")
			switch k {
			case "Zeta", "Alpha", "Mid":
				own = append(own, l)
			}
		}
		lines[e.name] = own
		want := "http"
		if e.tls {
			want = "https"
		}
		if got := r.header("X-Forwarded-Proto"); len(got) != 1 || got[0] != want {
			t.Errorf("%s: X-Forwarded-Proto %q, want %q", e.name, got, want)
		}
	}
	if fmt.Sprint(lines["tls-h1"]) != fmt.Sprint(lines["fasthttp-h1"]) || fmt.Sprint(lines["fasthttp-h1"]) != "[Zeta: 1 Alpha: 2 Mid: 3]" {
		t.Errorf("header lines over TLS %q, over plain HTTP/1.1 %q", lines["tls-h1"], lines["fasthttp-h1"])
	}
}

// TestH2SmallResponseOneDataFrame: a response of known length ends its
// stream with its last bytes, one DATA frame for a small body, instead of
// a flushed frame and an empty one with END_STREAM.
func TestH2SmallResponseOneDataFrame(t *testing.T) {
	s := testSettings()
	s.H2C = true
	p := newTestProxy(t, s)
	setApps(p, newFixture(p, testApp("web"), echoProto(t)))
	addr := strings.TrimPrefix(startProxy(t, p), "http://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	_ = fr.WriteSettings()
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "h.test"}, {":path", "/one"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	var data []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after DATA frames %q: %v", data, err)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			data = append(data, string(d.Data()))
			if d.StreamEnded() {
				break
			}
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == 1 && h.StreamEnded() {
			t.Fatal("stream ended without a body")
		}
	}
	if len(data) != 1 || data[0] != "http /one" {
		t.Errorf("DATA frames %q, want one with the whole body", data)
	}
}
