package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"github.com/valyala/fasthttp"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// bodyBufferLimit is the largest request body read into memory before the
// request is forwarded; such bodies can be replayed on a retry. Larger
// bodies are streamed to the worker and never retried once sent.
const bodyBufferLimit = 256 << 10

// noReadTimeout stands for "no limit" where fasthttp takes 0 as "default".
const noReadTimeout = 365 * 24 * time.Hour

// Serve serves plain HTTP/1.1 (and h2c when enabled) on ln until ln is
// closed or Shutdown; it returns nil then. Several listeners may be served
// at once; each gets an engine server built from the current settings.
func (p *Proxy) Serve(ln net.Listener) error {
	s := p.newFastServer()
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil
	}
	p.fast = append(p.fast, s)
	// Shutdown closes ln itself too: the engine only knows listeners it
	// has started serving, and Shutdown may come before that.
	p.listeners = append(p.listeners, ln)
	p.mu.Unlock()
	if p.settings.Load().H2C {
		ln = newH2CListener(ln, p)
	}
	err := s.Serve(ln)
	if err == nil || errors.Is(err, net.ErrClosed) || p.isClosing() {
		return nil
	}
	return fmt.Errorf("serving http: %w", err)
}

func (p *Proxy) isClosing() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closing
}

func (p *Proxy) newFastServer() *fasthttp.Server {
	st := p.settings.Load()
	// The engine's read buffer is the header limit (larger -> 431), and
	// each open client connection keeps one: memory per connection is
	// about max_header_bytes.
	header := st.MaxHeaderBytes
	if header < 4096 {
		header = 4096
	}
	return &fasthttp.Server{
		Handler:                      p.serveFast,
		ErrorHandler:                 p.fastError,
		HeaderReceived:               p.headerReceived,
		ConnState:                    p.trackConn,
		Logger:                       fastLogger{p.log.Named("http")},
		ReadBufferSize:               header,
		ReadTimeout:                  st.ReadHeaderTimeout,
		WriteTimeout:                 st.WriteTimeout,
		IdleTimeout:                  st.IdleTimeout,
		MaxRequestBodySize:           bodyBufferLimit,
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		NoDefaultDate:                true,
		SecureErrorLogMessage:        true,
		CloseOnShutdown:              true,
		KeepHijackedConns:            true,
	}
}

// headerReceived extends the connection's read deadline from the header
// timeout to the whole-request timeout once headers are in. A body
// declared over the limit is not waited for: the handler answers 413 at once.
func (p *Proxy) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	st := p.settings.Load()
	rt := st.ReadTimeout
	if rt <= 0 {
		rt = noReadTimeout
	}
	rc := fasthttp.RequestConfig{WriteTimeout: st.WriteTimeout}
	if h.ContentLength() != 0 || h.ConnectionUpgrade() {
		// Only a body or a tunnel reads the client connection again before
		// the next request, which sets its own deadline: a bodiless request
		// skips the deadline change.
		rc.ReadTimeout = rt
	}
	if st.MaxBodyBytes > 0 && int64(h.ContentLength()) > st.MaxBodyBytes {
		rc.MaxRequestBodySize = 1
	}
	return rc
}

// fastError answers requests the engine could not parse.
func (p *Proxy) fastError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		writeFastError(ctx, ErrHeaderTooLarge)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		writeFastError(ctx, ErrBodyTooLarge)
	case isTimeout(err):
		writeFastError(ctx, ErrReadTimeout)
	default:
		p.log.Debug("bad request", "client", ctx.RemoteAddr().String(), "error", err)
		writeFastError(ctx, ErrBadRequest)
	}
}

// writeFastError writes the proxy's own answer for e.
func writeFastError(ctx *fasthttp.RequestCtx, e *Error) {
	r := &ctx.Response
	r.Reset()
	r.SetStatusCode(e.Status)
	r.Header.SetContentTypeBytes(textPlain)
	r.Header.Set("X-Content-Type-Options", "nosniff")
	if e.RetryAfter != "" {
		r.Header.Set("Retry-After", e.RetryAfter)
	}
	if e.Close {
		r.SetConnectionClose()
	}
	r.SetBodyString(e.Body)
}

var textPlain = []byte("text/plain; charset=utf-8")

// fastCall is one request's scratch state, pooled to keep the hot path
// free of allocations.
type fastCall struct {
	req   Request
	buf   []byte
	reqID []byte
	limit *bodyLimit // set for streamed chunked bodies under a size limit
	// noHost is set when the client sent no Host header (HTTP/1.0).
	noHost bool
	// http10 is set for HTTP/1.0 clients, which cannot read chunked bodies.
	http10 bool
}

// bodyLimit fails a streamed request body once it passes the limit.
type bodyLimit struct {
	r        io.Reader
	left     int64
	exceeded bool
}

func (l *bodyLimit) Read(p []byte) (int, error) {
	if l.left < 0 {
		l.exceeded = true
		return 0, ErrBodyTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.exceeded = true
		return 0, ErrBodyTooLarge
	}
	return n, err
}

var fastCalls = sync.Pool{New: func() any { return &fastCall{buf: make([]byte, 0, 128)} }}

// serveFast is the fasthttp request handler.
func (p *Proxy) serveFast(ctx *fasthttp.RequestCtx) {
	st := p.settings.Load()
	h := &ctx.Request.Header
	uri := h.RequestURI()
	cl := h.ContentLength()
	if cl == -1 && hasRawHeader(h.RawHeaders(), "content-length") {
		// Both Content-Length and Transfer-Encoding: the engine picked
		// chunked, a worker might pick the length. Never forward that.
		writeFastError(ctx, ErrBadRequest)
		return
	}
	if st.MaxBodyBytes > 0 && int64(cl) > st.MaxBodyBytes {
		writeFastError(ctx, ErrBodyTooLarge)
		return
	}
	rt := p.router.Load().match(b2s(h.Host()), b2s(uriPath(uri)))
	if rt == nil {
		writeFastError(ctx, ErrNoRoute)
		return
	}
	t := rt.src.Table()
	if t == nil {
		writeFastError(ctx, ErrNoBackend)
		return
	}
	c := fastCalls.Get().(*fastCall)
	replayable := true
	if ctx.Request.IsBodyStream() {
		switch {
		case cl >= 0 && cl <= bodyBufferLimit:
			ctx.Request.Body() // small: buffer it so a retry can send it again
		case cl == -1 && st.MaxBodyBytes > 0:
			// A chunked body has no declared size: count it as it streams.
			c.limit = &bodyLimit{r: ctx.RequestBodyStream(), left: st.MaxBodyBytes}
			ctx.Request.SetBodyStream(c.limit, -1)
			replayable = false
		default:
			replayable = false
		}
	}

	clientClose := h.ConnectionClose()
	defer func() {
		if clientClose {
			ctx.Response.SetConnectionClose()
		}
		c.req = Request{}
		c.buf = c.buf[:0]
		c.reqID = c.reqID[:0]
		c.limit = nil
		c.noHost = false
		c.http10 = false
		fastCalls.Put(c)
	}()
	peer := remoteAddr(ctx.RemoteAddr())
	upgrade := isUpgrade(h)
	c.prepare(ctx, p, st, rt, peer, uri, upgrade)

	r := &c.req
	r.ClientIP = peer
	if rt.cookieName != "" {
		r.Sticky = h.Cookie(rt.cookieName)
	}
	if upgrade {
		p.tunnelFast(ctx, rt, t, c)
		return
	}
	policy := retryPolicy{
		left:       t.App.Retries,
		idempotent: idempotentMethod(b2s(h.Method())) || len(h.Peek("Idempotency-Key")) > 0,
		replayable: replayable,
	}
	if t.App.RetryTimeout > 0 {
		policy.deadline = ctx.Time().Add(t.App.RetryTimeout)
	}
	r.now = ctx.Time().UnixNano()
	for first := true; ; first = false {
		if !first {
			r.now = time.Now().UnixNano()
		}
		r.max = int64(t.App.MaxInflight)
		b, err := acquire(rt, t, r, clientWatch{conn: ctx.Conn()})
		if err != nil {
			if err == ErrClientGone {
				p.log.Debug("client left while queued", "app", rt.name)
			}
			writeFastError(ctx, err.(*Error))
			return
		}
		err = p.forwardFast(ctx, rt, t, b, c)
		if err == nil {
			return
		}
		release(rt, b)
		now := time.Now()
		if c.limit != nil && c.limit.exceeded {
			writeFastError(ctx, ErrBodyTooLarge)
			return
		}
		if err != errStaleConn {
			passiveFailure(p.log, t, b, now, failureReason(err))
		}
		if policy.again(err, now) {
			t.Stats.Retries.Add(1)
			p.log.Debug("retrying request", "app", rt.name, "worker", b.ID, "error", err)
			r.avoid = b
			if nt := rt.src.Table(); nt != nil {
				t = nt
			}
			continue
		}
		e := errorFor(err)
		b.Stats.Observe(e.Status, now.Sub(ctx.Time()))
		b.Stats.Errors.Add(1)
		p.log.Debug("request failed", "app", rt.name, "worker", b.ID, "status", e.Status, "error", err)
		writeFastError(ctx, e)
		return
	}
}

// forwardFast sends the request to b and, on success, sets the client's
// response to stream b's answer. b's slot is released when that stream
// is closed (after the last byte was written or the client left).
func (p *Proxy) forwardFast(ctx *fasthttp.RequestCtx, rt *route, t *pool.Table, b *pool.Backend, c *fastCall) error {
	u, ok := b.Upstream.(*upstream)
	if !ok {
		return &dialError{err: errors.New("backend has no upstream")}
	}
	if c.noHost {
		ctx.Request.Header.SetHost(b.Addr)
	}
	st := p.settings.Load()
	resp := fasthttp.AcquireResponse()
	var err error
	if st.ResponseHeaderTimeout > 0 && !ctx.Request.IsBodyStream() {
		// The whole try (dial, write, headers) under the current settings.
		err = u.hc.DoTimeout(&ctx.Request, resp, st.ResponseHeaderTimeout+st.DialTimeout)
	} else {
		// A streamed body may take long to send: only the client's own
		// ReadTimeout, set when the upstream was made, runs after the
		// write (a DoTimeout deadline would cut the upload).
		err = u.hc.Do(&ctx.Request, resp)
	}
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		if errors.Is(err, fasthttp.ErrNoFreeConns) {
			return &dialError{err: err}
		}
		return err
	}
	body := resp.BodyStream()
	size := resp.Header.ContentLength()
	var small *smallBody
	if body != nil && size >= 0 && size <= smallBodyLimit {
		// Read whole while the response-header deadline still runs; the
		// worker connection goes back to its pool before the client's
		// answer is written, and the engine writes a plain body.
		small = smallBodies.Get().(*smallBody)
		if err := small.read(body, size); err != nil {
			smallBodies.Put(small)
			_ = resp.CloseBodyStream()
			fasthttp.ReleaseResponse(resp)
			return err
		}
		_ = resp.CloseBodyStream()
		body = nil
	} else if body != nil {
		liftReadDeadline(resp.RemoteAddr())
	}
	status := resp.StatusCode()
	if status >= 500 && t.App.Passive.Count5xx {
		passiveFailure(p.log, t, b, time.Now(), "status "+strconv.Itoa(status))
	} else {
		passiveSuccess(b, c.req.now)
	}

	out := &ctx.Response
	resp.Header.CopyTo(&out.Header)
	out.Header.ResetConnectionClose()
	stripResponseHops(&out.Header)
	if len(c.reqID) > 0 {
		out.Header.SetBytesV("X-Request-Id", c.reqID)
	}
	if rt.cookieName != "" && string(c.req.Sticky) != b.ID {
		out.Header.Add("Set-Cookie", rt.cookieName+"="+b.ID+"; Path=/; HttpOnly; SameSite=Lax")
	}

	if small != nil {
		out.SetBody(small.buf[:size])
		smallBodies.Put(small)
	}
	if body == nil {
		b.Stats.Observe(status, time.Since(ctx.Time()))
		fasthttp.ReleaseResponse(resp)
		release(rt, b)
		return nil
	}
	if size < -1 {
		size = -1 // read-until-close from the worker: re-frame as chunked
	}
	if size < 0 && c.http10 {
		return p.bufferForHTTP10(ctx, rt, b, resp, status)
	}
	rl := relays.Get().(*relay)
	*rl = relay{body: body, resp: resp, rt: rt, t: t, b: b, start: ctx.Time(), status: status, log: p.log}
	out.SetBodyStream(rl, size)
	return nil
}

// smallBodyLimit is the largest worker response body, by Content-Length,
// that is copied into the client's answer instead of streamed: such a body
// mostly arrives with its headers, and copying it spares the stream's
// per-response allocations and lets the worker slot go before the client
// write.
const smallBodyLimit = 8 << 10

// smallBody is a pooled buffer for one small response body.
type smallBody struct {
	buf [smallBodyLimit + 1]byte
}

var smallBodies = sync.Pool{New: func() any { return new(smallBody) }}

// read reads exactly size bytes of body, and its end: the engine only
// pools a worker connection whose body stream reported EOF.
func (s *smallBody) read(body io.Reader, size int) error {
	n := 0
	for {
		m, err := body.Read(s.buf[n : size+1])
		n += m
		switch {
		case err == io.EOF && n == size:
			return nil
		case err == io.EOF || n > size:
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		}
	}
}

// maxHTTP10Body bounds a body of unknown length buffered for an HTTP/1.0
// client.
const maxHTTP10Body = 64 << 20

// bufferForHTTP10 reads a response of unknown length whole, so an HTTP/1.0
// client gets it with a Content-Length instead of chunks it cannot read.
func (p *Proxy) bufferForHTTP10(ctx *fasthttp.RequestCtx, rt *route, b *pool.Backend, resp *fasthttp.Response, status int) error {
	body, err := io.ReadAll(io.LimitReader(resp.BodyStream(), maxHTTP10Body+1))
	_ = resp.CloseBodyStream()
	fasthttp.ReleaseResponse(resp)
	b.Stats.Observe(status, time.Since(ctx.Time()))
	release(rt, b)
	if err != nil || len(body) > maxHTTP10Body {
		p.log.Debug("response for http/1.0 client not buffered", "app", rt.name, "worker", b.ID, "error", err)
		writeFastError(ctx, ErrBadGateway)
		ctx.Response.SetConnectionClose()
		return nil
	}
	ctx.Response.SetBodyRaw(body)
	return nil
}

// relay is the client response body: it reads the worker's body and, when
// the engine closes it, records the request and frees the worker slot.
type relay struct {
	body    io.Reader
	resp    *fasthttp.Response
	rt      *route
	t       *pool.Table
	b       *pool.Backend
	start   time.Time
	status  int
	readErr error
	log     hclog.Logger
}

var relays = sync.Pool{New: func() any { return &relay{} }}

func (r *relay) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if err != nil && err != io.EOF {
		r.readErr = err
	}
	return n, err
}

// CloseWithError ends the stream; writeErr is the engine's error writing
// to the client, if any. The worker connection goes back to its pool, or
// is closed when its body was not read to the end. (Only CloseWithError is
// implemented: the engine calls both Close and CloseWithError when both
// exist, and the relay must be released exactly once.)
func (r *relay) CloseWithError(writeErr error) error {
	err := r.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(r.resp)
	switch {
	case r.readErr != nil:
		r.log.Debug("worker failed mid-response", "app", r.rt.name, "worker", r.b.ID, "error", r.readErr)
		passiveFailure(r.log, r.t, r.b, time.Now(), "connection error")
	case writeErr != nil:
		r.t.Stats.ClientCancelled.Add(1)
		r.log.Debug("client left mid-response", "app", r.rt.name, "worker", r.b.ID, "error", writeErr)
	}
	r.b.Stats.Observe(r.status, time.Since(r.start))
	release(r.rt, r.b)
	*r = relay{}
	relays.Put(r)
	return err
}

// prepare rewrites the request headers for the worker: hop-by-hop headers
// out, X-Forwarded-*, X-Request-Start and X-Request-Id in, the path
// stripped of the app's prefix when asked.
func (c *fastCall) prepare(ctx *fasthttp.RequestCtx, p *Proxy, st *config.Proxy, rt *route, peer netip.Addr, uri []byte, upgrade bool) {
	h := &ctx.Request.Header
	if conn := h.Peek("Connection"); len(conn) > 0 {
		connectionTokens(conn, func(tok []byte) {
			if !equalFold(tok, "close") && !equalFold(tok, "keep-alive") && !equalFold(tok, "upgrade") {
				h.DelBytes(tok)
			}
		})
	}
	if !upgrade {
		h.Del("Connection")
		h.Del("Upgrade")
	}
	for _, name := range requestHops {
		if len(h.Peek(name)) > 0 {
			h.Del(name)
		}
	}
	// The engine already answered 100-continue and read the body; passed
	// on, the header would make the worker client wait for another one.
	if len(h.Peek("Expect")) > 0 {
		h.Del("Expect")
	}
	// The worker connection stays open even when the client's closes, and
	// HTTP/1.0 clients are spoken for in HTTP/1.1 (keep-alive by default).
	h.ResetConnectionClose()
	if c.http10 = !h.IsHTTP11(); c.http10 {
		h.SetProtocol("HTTP/1.1")
	}
	// The Host header goes to the worker as the client sent it (the engine
	// would otherwise rebuild it, lowercased, from the parsed URI).
	ctx.Request.UseHostHeader = true

	isTrusted := len(st.TrustedProxies) > 0 && trusted(st.TrustedProxies, peer)
	buf := c.buf[:0]
	if prior := h.Peek("X-Forwarded-For"); isTrusted && len(prior) > 0 {
		buf = append(buf, prior...)
		buf = append(buf, ", "...)
	}
	buf = peer.AppendTo(buf)
	h.SetBytesV("X-Forwarded-For", buf)
	if !isTrusted || len(h.Peek("X-Forwarded-Proto")) == 0 {
		h.Set("X-Forwarded-Proto", "http")
	}
	c.noHost = len(h.Host()) == 0 // HTTP/1.0 may omit it; forwardFast names the worker
	if !c.noHost && (!isTrusted || len(h.Peek("X-Forwarded-Host")) == 0) {
		h.SetBytesV("X-Forwarded-Host", h.Host())
	}
	buf = appendRequestStart(buf[:0], ctx.Time())
	h.SetBytesV("X-Request-Start", buf)
	if id := h.Peek("X-Request-Id"); len(id) > 0 {
		if st.RequestID {
			c.reqID = append(c.reqID[:0], id...)
		}
	} else if st.RequestID {
		c.reqID = p.ids.appendNext(c.reqID[:0])
		h.SetBytesV("X-Request-Id", c.reqID)
	}
	if rt.strip && rt.prefix != "" {
		path := uriPath(uri)
		if hasPathPrefix(b2s(path), rt.prefix) {
			buf = append(buf[:0], rt.strippedPath(b2s(path))...)
			buf = append(buf, uri[len(path):]...)
			ctx.Request.SetRequestURIBytes(buf)
		}
	}
	c.buf = buf
}

// requestHops are the hop-by-hop request headers besides Connection and
// Upgrade, which upgrades keep.
var requestHops = []string{"Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te", "Trailer"}

// stripResponseHops removes hop-by-hop headers from a worker's response
// (names as the worker wrote them, any case).
func stripResponseHops(h *fasthttp.ResponseHeader) {
	var drop []string
	if conn := h.Peek("Connection"); len(conn) > 0 {
		connectionTokens(conn, func(tok []byte) { drop = append(drop, string(tok)) })
	}
	for k := range h.All() {
		if isHopHeader(k) && !equalFold(k, "Transfer-Encoding") {
			drop = append(drop, string(k))
		}
	}
	for _, k := range drop {
		h.Del(k)
	}
}

// hasRawHeader reports whether raw header lines (as received) contain a
// field named name (lowercase).
func hasRawHeader(raw []byte, name string) bool {
	for len(raw) > 0 {
		end := 0
		for end < len(raw) && raw[end] != '\n' {
			end++
		}
		line := raw[:end]
		if len(line) > len(name) && line[len(name)] == ':' && equalFold(line[:len(name)], name) {
			return true
		}
		if end == len(raw) {
			break
		}
		raw = raw[end+1:]
	}
	return false
}

// uriPath returns the path of a raw request target, without the query and,
// for absolute-form targets, without scheme and authority.
func uriPath(uri []byte) []byte {
	if len(uri) > 0 && uri[0] != '/' {
		if i := bytes.Index(uri, schemeSep); i >= 0 {
			rest := uri[i+3:]
			j := 0
			for j < len(rest) && rest[j] != '/' && rest[j] != '?' {
				j++
			}
			uri = rest[j:]
		}
	}
	for i, ch := range uri {
		if ch == '?' || ch == '#' {
			return uri[:i]
		}
	}
	return uri
}

var schemeSep = []byte("://")

// isUpgrade reports whether the request asks to switch protocols (but not
// to h2c, which is answered on this hop, never passed on).
func isUpgrade(h *fasthttp.RequestHeader) bool {
	if !h.ConnectionUpgrade() {
		return false
	}
	up := h.Peek("Upgrade")
	return len(up) > 0 && !equalFold(up, "h2c")
}

// remoteAddr returns the IP of a peer address.
func remoteAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// b2s views b as a string without copying; the string must not outlive b.
func b2s(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// fastLogger sends the engine's own log lines to hclog at debug level
// (they are about individual client connections).
type fastLogger struct{ log hclog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	if l.log.IsDebug() {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

// failureReason names a failure for the ejection log line.
func failureReason(err error) string {
	switch {
	case notSent(err):
		return "connection failed"
	case isTimeout(err):
		return "timeout"
	default:
		return "connection error"
	}
}
