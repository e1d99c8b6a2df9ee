package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// ServeTLS serves HTTPS with ALPN h2 and http/1.1 on ln using the
// configured certificate, through net/http over the same routing,
// balancing, queue and retry core. It returns nil after Shutdown.
func (p *Proxy) ServeTLS(ln net.Listener) error {
	st := p.settings.Load()
	if st.TLS == nil {
		return errors.New("serving https: no tls certificate configured")
	}
	if _, err := p.certificate(nil); err != nil {
		return err
	}
	cfg := &tls.Config{
		GetCertificate: p.certificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}
	// ALPN picks the engine per connection: HTTP/2 goes to the HTTP/2
	// server behind its filter, HTTP/1.1 to the fasthttp engine, as on
	// the plain listener (the engine sees the *tls.Conn, so IsTLS holds).
	classify := func(c net.Conn) (net.Conn, bool, error) {
		tc := tls.Server(c, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), p.headerTimeout())
		defer cancel()
		if err := tc.HandshakeContext(ctx); err != nil {
			return c, false, err
		}
		return tc, tc.ConnectionState().NegotiatedProtocol == "h2", nil
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil
	}
	p.listeners = append(p.listeners, ln) // each generation's server leaves it open
	p.mu.Unlock()
	err := p.serveGenerations(ln, func(gen net.Listener) (func() error, bool) {
		st := p.settings.Load()
		s := p.newFastServer()
		base := p.newStdServer(st) // the HTTP/2 connections' settings
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closing {
			return nil, false
		}
		p.fast = append(p.fast, s)
		p.https = append(p.https, base)
		split := newSplitListener(gen, p, base, classify)
		return func() error { return s.Serve(split) }, true
	})
	if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) || p.isClosing() {
		return nil
	}
	return fmt.Errorf("serving https: %w", err)
}

// loadedCert is the certificate read from the configured files.
type loadedCert struct {
	files config.TLS
	cert  *tls.Certificate
}

// certificate returns the configured certificate, reading the files again
// after SetSettings (a reload picks up renewed certificates). A reload whose
// files fail to load keeps serving the previous certificate.
func (p *Proxy) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	files := p.settings.Load().TLS
	cur := p.cert.Load()
	if files == nil || (cur != nil && cur.files == *files) {
		if cur == nil {
			return nil, errors.New("no tls certificate configured")
		}
		return cur.cert, nil
	}
	c, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		if cur != nil {
			p.log.Warn("loading tls certificate failed, keeping the previous one", "cert", files.Cert, "error", err)
			p.cert.Store(&loadedCert{files: *files, cert: cur.cert})
			return cur.cert, nil
		}
		return nil, fmt.Errorf("loading tls certificate: %w", err)
	}
	p.cert.Store(&loadedCert{files: *files, cert: &c})
	return &c, nil
}

// newStdServer returns a net/http server with the proxy's limits.
func (p *Proxy) newStdServer(st *config.Proxy) *http.Server {
	return &http.Server{
		Handler:           p.std,
		ReadHeaderTimeout: st.ReadHeaderTimeout,
		ReadTimeout:       st.ReadTimeout,
		WriteTimeout:      st.WriteTimeout,
		IdleTimeout:       st.IdleTimeout,
		MaxHeaderBytes:    st.MaxHeaderBytes,
		ErrorLog:          p.log.Named("https").StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Debug}),
	}
}

// stdCall is one request on the net/http engine (TLS with HTTP/1.1 or
// HTTP/2, and h2c): the pipeline's exchange.
type stdCall struct {
	p    *Proxy
	w    http.ResponseWriter
	r    *http.Request
	out  *http.Request // the request sent to workers, rewritten once
	in   inbound
	req  Request
	buf  []byte
	rb   reqBody
	resp *http.Response
	reqH stdHeaders
	// respH views resp's header (set by respHeaders).
	respH stdHeaders
}

// serveStd is the net/http request handler: it fills the inbound request
// and runs the pipeline.
func (p *Proxy) serveStd(w http.ResponseWriter, r *http.Request) {
	c := &stdCall{p: p, w: w, r: r}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.Host = r.Host // the authority of an absolute-form target when there was one
	out.Close = false
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = nil // net/http would add its own
	}
	c.out = out
	c.reqH.h = out.Header
	c.in = inbound{
		method:        []byte(r.Method),
		path:          []byte(r.URL.EscapedPath()),
		contentLength: r.ContentLength,
		peer:          stdClientIP(r),
		tls:           r.TLS != nil,
		start:         time.Now(),
	}
	if r.Host != "" {
		c.in.host = []byte(r.Host)
	}
	defer c.rb.end(false) // also when the relay aborts the response with a panic
	p.serve(c, &c.in)
}

func (c *stdCall) reqHeaders() Headers { return &c.reqH }

func (c *stdCall) scratch() *[]byte { return &c.buf }

func (c *stdCall) balanceRequest() *Request { return &c.req }

func (c *stdCall) cookie(name string) []byte {
	if ck, err := c.r.Cookie(name); err == nil {
		return []byte(ck.Value)
	}
	return nil
}

func (c *stdCall) watch() clientWatch { return clientWatch{done: c.r.Context().Done()} }

func (c *stdCall) clientGone() bool { return c.r.Context().Err() != nil }

// setTarget sets the path sent to the worker (raw, as the client sent it).
func (c *stdCall) setTarget(path []byte) {
	if path == nil {
		return
	}
	raw := string(path)
	if p, err := url.PathUnescape(raw); err == nil {
		c.out.URL.Path = p
		c.out.URL.RawPath = raw
	}
}

// openBody opens the request body by the buffering rule (reqBody.open).
func (c *stdCall) openBody(st *config.Proxy) *reqBody {
	b := &c.rb
	r := c.r
	*b = reqBody{declared: r.ContentLength}
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		b.declared = 0
		return b
	}
	b.open(r.Body, &st.Buffering, &c.p.buffers, st.MaxBodyBytes, nil)
	return b
}

// send makes one attempt on b through its net/http transport.
func (c *stdCall) send(b *pool.Backend, _ *config.Proxy, body *reqBody, _ []byte) error {
	u, ok := b.Upstream.(*upstream)
	if !ok {
		return &dialError{err: errors.New("backend has no upstream")}
	}
	out := c.out
	out.URL.Host = b.Host()
	out.GetBody = nil
	switch {
	case body.held:
		out.Body = io.NopCloser(body.heldReader())
		out.ContentLength = body.declared
		// Lets the transport resend on a pooled connection the worker
		// closed before reading anything.
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body.heldReader()), nil }
	case body.src != nil:
		out.Body = body // its Close does nothing: the transport closes it on a failed dial
		out.ContentLength = body.declared
	default:
		out.Body = nil
		out.ContentLength = 0
	}
	resp, err := u.transport().RoundTrip(out)
	if err != nil {
		return err
	}
	if err := ownStdHead(resp.Header); err != nil {
		_ = resp.Body.Close()
		return err
	}
	c.resp = resp
	return nil
}

// ownStdHead judges the names of a worker's answer as fasthttp's ownHead
// does: the transport keeps a name with a space (go.dev/issue/34540), which
// the HTTP/2 encoder would drop unsaid. One with a space inside does not
// parse: errBadAnswer. A space before the colon is removed (RFC 9112 5.1),
// except on a framing name, which the transport did not frame the body by
// (fasthttp did): errBadAnswer too.
func ownStdHead(h http.Header) error {
	for k, vs := range h {
		if !strings.Contains(k, " ") {
			continue
		}
		name := strings.TrimRight(k, " ")
		if strings.Contains(name, " ") {
			return errBadAnswer
		}
		name = http.CanonicalHeaderKey(name)
		if name == "Content-Length" || name == "Transfer-Encoding" {
			return errBadAnswer
		}
		delete(h, k)
		h[name] = append(h[name], vs...)
	}
	return nil
}

func (c *stdCall) respStatus() int { return c.resp.StatusCode }

func (c *stdCall) respHeaders() Headers {
	c.respH.h = c.resp.Header
	return &c.respH
}

func (c *stdCall) drop() {
	_ = c.resp.Body.Close()
	c.resp = nil
}

// relay copies the worker's response to the client, flushing as bytes
// arrive so event streams are not held back, and its trailers after the
// body. A worker that fails mid-body aborts the client's response (the
// connection is closed, an HTTP/2 stream reset): returning would end it
// cleanly, as if whole.
func (c *stdCall) relay(fin finish) {
	resp, w := c.resp, c.w
	c.resp = nil
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	if _, ok := h["Content-Type"]; !ok {
		h["Content-Type"] = nil // the engine would sniff one from the body
	}
	w.WriteHeader(resp.StatusCode)
	if resp.ContentLength < 0 && resp.Body != http.NoBody {
		// A stream of unknown length (server-sent events, a long poll):
		// the head goes now, not with the first body bytes, which may be
		// long in coming.
		_ = http.NewResponseController(w).Flush()
	}
	var body io.Reader = resp.Body
	var sp *spool
	if resp.Body != http.NoBody {
		sp = fin.spoolFor(&c.respH, resp.ContentLength)
	}
	if sp != nil {
		body = sp
		go c.fill(sp, resp, fin)
	}
	sent, readErr, writeErr := copyFlushing(w, body, resp.ContentLength)
	if sp != nil {
		sp.close()
	} else {
		_ = resp.Body.Close()
	}
	if readErr != nil && c.r.Context().Err() != nil {
		// The client left; the transport cancelled the worker's request.
		readErr, writeErr = nil, c.r.Context().Err()
	}
	if readErr == nil && writeErr == nil {
		for k, vs := range resp.Trailer {
			h[k] = vs
		}
	}
	if sp != nil {
		if readErr == nil {
			fin.clientDone(writeErr)
		}
	} else {
		fin.bytes = sent
		fin.done(readErr, writeErr)
	}
	if readErr != nil {
		panic(http.ErrAbortHandler)
	}
}

// fill is the filler of a buffered response: it reads the worker's body
// into sp and frees the worker's slot at its end, whatever the client is
// doing. A client that leaves cancels the worker's request (its context is
// the client's), which ends the filler.
func (c *stdCall) fill(sp *spool, resp *http.Response, fin finish) {
	err := sp.fill(resp.Body)
	if err == errSpoolClosed {
		err = nil
	}
	if err != nil && c.r.Context().Err() != nil {
		err = nil // the client left: not the worker's failure
	}
	sp.finish(err)
	_ = resp.Body.Close()
	fin.bytes = sp.filled
	fin.workerDone(err)
}

// copyFlushing copies a response body to the client, flushing after every
// read so events reach the client as the worker writes them. A read that
// completes the declared length (size, -1 when unknown) is not flushed:
// the handler's return sends it with the end of the stream, one DATA frame
// instead of two on HTTP/2. It tells a failure reading the worker's body
// apart from one writing to the client, and says how many bytes it sent.
func copyFlushing(w http.ResponseWriter, body io.Reader, size int64) (sent int64, readErr, writeErr error) {
	rc := http.NewResponseController(w)
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return sent, nil, werr
			}
			if sent += int64(n); sent != size {
				if werr := rc.Flush(); werr != nil {
					return sent, nil, werr
				}
			}
		}
		if err == io.EOF {
			return sent, nil, nil
		}
		if err != nil {
			return sent, err, nil
		}
	}
}

// copyBuffers hold copyFlushing's buffers between responses.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// tunnel answers an accepted 101 on the hijacked client connection and
// passes bytes both ways.
func (c *stdCall) tunnel(fin finish) {
	resp, w := c.resp, c.w
	c.resp = nil
	defer fin.done(nil, nil)
	backend, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		_ = resp.Body.Close()
		writeStdError(w, ErrBadGateway)
		return
	}
	cc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = backend.Close()
		writeStdError(w, ErrBadGateway)
		return
	}
	tn := &tunnel{backend: nopConn{backend}}
	if !c.p.openTunnel(tn) || !tn.setClient(cc) {
		_ = cc.Close()
		_ = backend.Close()
		return
	}
	defer c.p.closeTunnel(tn)
	keepProbing(cc)
	resp.Body = nil
	_ = resp.Write(brw)
	_ = brw.Flush()
	pipe(tn, struct {
		io.Reader
		io.Writer
	}{brw, cc}, backend)
}

// fail answers the client with the proxy's own error; a client that left
// gets nothing.
func (c *stdCall) fail(e *Error) {
	if e == ErrClientGone {
		return
	}
	writeStdError(c.w, e)
}

// stdHeaders is a net/http header map as the pipeline's Headers.
type stdHeaders struct {
	h       http.Header
	scratch [][]byte
}

func (h *stdHeaders) Values(name string) [][]byte {
	h.scratch = h.scratch[:0]
	for _, v := range h.h[textproto.CanonicalMIMEHeaderKey(name)] {
		h.scratch = append(h.scratch, unsafe.Slice(unsafe.StringData(v), len(v))) // read only
	}
	return h.scratch
}

func (h *stdHeaders) Has(name string) bool {
	_, ok := h.h[textproto.CanonicalMIMEHeaderKey(name)]
	return ok
}

func (h *stdHeaders) Present() nameSet {
	var has nameSet
	for k := range h.h {
		has |= nameBit(unsafe.Slice(unsafe.StringData(k), len(k))) // read only
	}
	return has
}

func (h *stdHeaders) Del(name string) { h.h.Del(name) }

func (h *stdHeaders) Add(name string, value []byte) { h.h.Add(name, string(value)) }

// nopConn lets a worker's upgraded body stand in as a net.Conn for tunnel.
type nopConn struct{ io.ReadWriteCloser }

func (nopConn) LocalAddr() net.Addr              { return nil }
func (nopConn) RemoteAddr() net.Addr             { return nil }
func (nopConn) SetDeadline(time.Time) error      { return nil }
func (nopConn) SetReadDeadline(time.Time) error  { return nil }
func (nopConn) SetWriteDeadline(time.Time) error { return nil }

// writeStdError writes the proxy's own answer for e on the net/http path.
func writeStdError(w http.ResponseWriter, e *Error) {
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(e.Body)))
	if e.RetryAfter != "" {
		h.Set("Retry-After", e.RetryAfter)
	}
	if e.Close {
		h.Set("Connection", "close")
	}
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, e.Body)
}

// stdClientIP returns the direct peer of a net/http request.
func stdClientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
