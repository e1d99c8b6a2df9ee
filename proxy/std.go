package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/http2"

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
	srv := p.newStdServer(st)
	srv.TLSConfig = &tls.Config{
		GetCertificate: p.certificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}
	if err := http2.ConfigureServer(srv, &http2.Server{IdleTimeout: st.IdleTimeout}); err != nil {
		return fmt.Errorf("configuring http2: %w", err)
	}
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil
	}
	p.https = append(p.https, srv)
	p.mu.Unlock()
	err := srv.Serve(tls.NewListener(ln, srv.TLSConfig))
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
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

// serveStd is the net/http request handler.
func (p *Proxy) serveStd(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := p.settings.Load()
	rt := p.router.Load().match(r.Host, r.URL.Path)
	if rt == nil {
		writeStdError(w, ErrNoRoute)
		return
	}
	t := rt.src.Table()
	if t == nil {
		writeStdError(w, ErrNoBackend)
		return
	}
	if st.MaxBodyBytes > 0 && r.ContentLength > st.MaxBodyBytes {
		writeStdError(w, ErrBodyTooLarge)
		return
	}
	out := p.outgoingStd(r, st, rt, start)
	var body []byte
	replayable := true
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength >= 0 && r.ContentLength <= bodyBufferLimit {
			var err error
			if body, err = io.ReadAll(r.Body); err != nil {
				writeStdError(w, ErrBadRequest)
				return
			}
		} else {
			replayable = false
			if st.MaxBodyBytes > 0 {
				out.Body = http.MaxBytesReader(w, r.Body, st.MaxBodyBytes)
			}
		}
	}
	upgrade := r.ProtoMajor == 1 && headerHasToken(r.Header["Connection"], "upgrade") && r.Header.Get("Upgrade") != ""
	if upgrade {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", r.Header.Get("Upgrade"))
	}

	req := &Request{ClientIP: stdClientIP(r)}
	if rt.cookieName != "" {
		if ck, err := r.Cookie(rt.cookieName); err == nil {
			req.Sticky = []byte(ck.Value)
		}
	}
	policy := retryPolicy{
		left:       t.App.Retries,
		idempotent: idempotentMethod(r.Method) || r.Header.Get("Idempotency-Key") != "",
		replayable: replayable,
	}
	if t.App.RetryTimeout > 0 {
		policy.deadline = start.Add(t.App.RetryTimeout)
	}
	for {
		req.now = time.Now().UnixNano()
		req.max = int64(t.App.MaxInflight)
		b, err := acquire(rt, t, req, clientWatch{done: r.Context().Done()})
		if err != nil {
			if err == ErrClientGone {
				p.log.Debug("client left while queued", "app", rt.name)
				return
			}
			writeStdError(w, err.(*Error))
			return
		}
		if body != nil {
			out.Body = io.NopCloser(bytes.NewReader(body))
			out.ContentLength = int64(len(body))
			// Lets the transport resend on a pooled connection the worker
			// closed before reading anything.
			out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		}
		err = p.forwardStd(w, out, rt, t, b, req, start, upgrade)
		if err == nil {
			return
		}
		release(rt, b)
		now := time.Now()
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeStdError(w, ErrBodyTooLarge)
			return
		}
		if r.Context().Err() != nil {
			t.Stats.ClientCancelled.Add(1)
			p.log.Debug("client left", "app", rt.name, "worker", b.ID)
			return
		}
		passiveFailure(p.log, t, b, now, failureReason(err))
		if policy.again(err, now) {
			t.Stats.Retries.Add(1)
			p.log.Debug("retrying request", "app", rt.name, "worker", b.ID, "error", err)
			req.avoid = b
			if nt := rt.src.Table(); nt != nil {
				t = nt
			}
			continue
		}
		e := errorFor(err)
		b.Stats.Observe(e.Status, now.Sub(start))
		b.Stats.Errors.Add(1)
		p.log.Debug("request failed", "app", rt.name, "worker", b.ID, "status", e.Status, "error", err)
		writeStdError(w, e)
		return
	}
}

// outgoingStd builds the request sent to workers: same method, path
// (stripped when asked), Host and body, hop-by-hop headers removed and
// the X-Forwarded-*, X-Request-Start and X-Request-Id headers set.
func (p *Proxy) outgoingStd(r *http.Request, st *config.Proxy, rt *route, start time.Time) *http.Request {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = "http"
	out.Host = r.Host
	out.Close = false
	if rt.strip && rt.prefix != "" && hasPathPrefix(r.URL.Path, rt.prefix) {
		out.URL.Path = rt.strippedPath(r.URL.Path)
		out.URL.RawPath = ""
	}
	h := out.Header
	for _, v := range h["Connection"] {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" {
				h.Del(tok)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
	peer := stdClientIP(r)
	isTrusted := len(st.TrustedProxies) > 0 && trusted(st.TrustedProxies, peer)
	xff := peer.String()
	if prior := strings.Join(h["X-Forwarded-For"], ", "); isTrusted && prior != "" {
		xff = prior + ", " + xff
	}
	h.Set("X-Forwarded-For", xff)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	if !isTrusted || h.Get("X-Forwarded-Proto") == "" {
		h.Set("X-Forwarded-Proto", proto)
	}
	if !isTrusted || h.Get("X-Forwarded-Host") == "" {
		h.Set("X-Forwarded-Host", r.Host)
	}
	h.Set("X-Request-Start", string(appendRequestStart(nil, start)))
	if h.Get("X-Request-Id") == "" && st.RequestID {
		h.Set("X-Request-Id", string(p.ids.appendNext(nil)))
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = nil // net/http would add its own
	}
	return out
}

// forwardStd sends out to b and copies the answer to w, flushing as bytes
// arrive so event streams are not held back.
func (p *Proxy) forwardStd(w http.ResponseWriter, out *http.Request, rt *route, t *pool.Table, b *pool.Backend, req *Request, start time.Time, upgrade bool) error {
	u, ok := b.Upstream.(*upstream)
	if !ok {
		return &dialError{err: errors.New("backend has no upstream")}
	}
	out.URL.Host = b.Addr
	resp, err := u.transport().RoundTrip(out)
	if err != nil {
		return err
	}
	status := resp.StatusCode
	if status >= 500 && t.App.Passive.Count5xx {
		passiveFailure(p.log, t, b, time.Now(), "status "+strconv.Itoa(status))
	} else {
		passiveSuccess(b, time.Now().UnixNano())
	}
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	if status != http.StatusSwitchingProtocols {
		for _, v := range resp.Header["Connection"] {
			for _, tok := range strings.Split(v, ",") {
				h.Del(strings.TrimSpace(tok))
			}
		}
		for _, name := range hopHeaders {
			h.Del(name)
		}
	}
	if id := out.Header.Get("X-Request-Id"); id != "" && p.settings.Load().RequestID {
		h.Set("X-Request-Id", id)
	}
	if rt.cookieName != "" && string(req.Sticky) != b.ID {
		h.Add("Set-Cookie", rt.cookieName+"="+b.ID+"; Path=/; HttpOnly; SameSite=Lax")
	}
	if status == http.StatusSwitchingProtocols && upgrade {
		p.tunnelStd(w, resp, rt, b, start)
		return nil
	}
	w.WriteHeader(status)
	if !copyFlushing(w, resp.Body) || out.Context().Err() != nil {
		t.Stats.ClientCancelled.Add(1)
		p.log.Debug("client left mid-response", "app", rt.name, "worker", b.ID)
	}
	_ = resp.Body.Close()
	b.Stats.Observe(status, time.Since(start))
	release(rt, b)
	return nil
}

// copyFlushing copies a response body to the client, flushing after every
// read so events reach the client as the worker writes them. It reports
// false when the client could not be written to. (A client that left also
// cancels the worker request, which ends the body early.)
func copyFlushing(w http.ResponseWriter, body io.Reader) bool {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return false
			}
			if rc.Flush() != nil {
				return false
			}
		}
		if err != nil {
			return true
		}
	}
}

// tunnelStd passes an upgraded HTTP/1.1 connection through on the net/http
// path by hijacking the client connection.
func (p *Proxy) tunnelStd(w http.ResponseWriter, resp *http.Response, rt *route, b *pool.Backend, start time.Time) {
	backend, ok := resp.Body.(io.ReadWriteCloser)
	defer func() {
		b.Stats.Observe(http.StatusSwitchingProtocols, time.Since(start))
		release(rt, b)
	}()
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
	if !p.openTunnel(tn) || !tn.setClient(cc) {
		_ = cc.Close()
		_ = backend.Close()
		return
	}
	defer p.closeTunnel(tn)
	resp.Body = nil
	_ = resp.Write(brw)
	_ = brw.Flush()
	pipe(tn, struct {
		io.Reader
		io.Writer
	}{brw, cc}, backend)
}

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

// headerHasToken reports whether a comma-separated header contains tok.
func headerHasToken(vs []string, tok string) bool {
	for _, v := range vs {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), tok) {
				return true
			}
		}
	}
	return false
}
