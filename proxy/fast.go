package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

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
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return nil
	}
	// Shutdown closes ln itself too: the engine only knows listeners it
	// has started serving, and Shutdown may come before that.
	p.listeners = append(p.listeners, ln)
	p.mu.Unlock()
	err := p.serveGenerations(ln, func(gen net.Listener) (func() error, bool) {
		s := p.newFastServer()
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closing {
			return nil, false
		}
		p.fast = append(p.fast, s)
		if p.settings.Load().H2C {
			gen = newH2CListener(gen, p)
		}
		return func() error { return s.Serve(gen) }, true
	})
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
	// The engine's read buffer is the header limit (larger -> 431). An
	// active connection keeps one; an idle one parks without it (conns.go).
	header := st.MaxHeaderBytes
	if header < 4096 {
		header = 4096
	}
	s := &fasthttp.Server{
		Handler:                      p.serveFast,
		ErrorHandler:                 p.fastError,
		HeaderReceived:               p.headerReceived,
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
	s.ConnState = p.trackConn(s)
	return s
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
		if _, h2c := ctx.Conn().(*prefixConn); h2c && ctx.ConnRequestNum() <= 1 {
			// On a listener that also speaks h2c, a first request that
			// does not parse may be a broken HTTP/2 preface: the answer
			// to that is a closed connection (RFC 9113 3.4), never an
			// HTTP/1.1 response the client cannot read.
			_ = ctx.Conn().Close()
			return
		}
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

// fastCall is one request on the fasthttp engine: the pipeline's exchange,
// pooled to keep the hot path free of allocations.
type fastCall struct {
	p    *Proxy
	ctx  *fasthttp.RequestCtx
	in   inbound
	req  Request
	buf  []byte
	rb   reqBody
	held []byte // buffer for bodies held whole, kept across requests
	// target is the origin-form request target, set by setTarget.
	target []byte
	resp   *fasthttp.Response
	small  *smallBody
	// trailers are the trailer names the worker's response announced
	// (copied: the pipeline's hop rules remove the announcement).
	trailers [][]byte
	// up and upr are the dedicated worker connection of an upgrade request.
	up  net.Conn
	upr *bufio.Reader
	// sticky holds the sticky cookie's value for the request.
	sticky []byte
	// noHost is set when the client sent no Host header (HTTP/1.0).
	noHost bool
	// http10 is set for HTTP/1.0 clients, which cannot read chunked bodies.
	http10 bool
}

var strColon = []byte(":")

var fastCalls = sync.Pool{New: func() any { return &fastCall{buf: make([]byte, 0, 256)} }}

// serveFast is the fasthttp request handler: it checks what only this
// engine can see (framing of the raw head), fills the inbound request and
// runs the pipeline.
func (p *Proxy) serveFast(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	cl := h.ContentLength()
	if cl == -1 && hasRawHeader(h.RawHeaders(), "content-length") {
		// Both Content-Length and Transfer-Encoding: the engine picked
		// chunked, a worker might pick the length. Never forward that.
		writeFastError(ctx, ErrBadRequest)
		return
	}
	if nameWithSpace(h.RawHeaders()) {
		// The engine keeps "Transfer Encoding: chunked" as a field of
		// that name; a worker could read it as anything. A name is a
		// token (RFC 9110 5.1): refuse, as HAProxy and net/http do.
		writeFastError(ctx, ErrBadRequest)
		return
	}
	if cl == -2 {
		cl = 0 // no framing header on a request: no body (RFC 9112 6.3)
	}
	c := fastCalls.Get().(*fastCall)
	c.p, c.ctx = p, ctx
	uri := h.RequestURI()
	c.in = inbound{
		method:        h.Method(),
		host:          h.Host(),
		path:          uriPath(uri),
		contentLength: int64(cl),
		peer:          remoteAddr(ctx.RemoteAddr()),
		tls:           ctx.IsTLS(),
		start:         ctx.Time(),
	}
	if auth := uriAuthority(uri); auth != nil {
		// Absolute form: the target's authority is the host (RFC 9112
		// 3.2.2), and the worker gets it as Host with an origin-form target.
		h.SetHostBytes(auth)
		c.in.host = h.Host()
	}
	clientClose := h.ConnectionClose()
	if clientClose {
		// The client's connection closes after its answer (set below);
		// the worker's pooled one stays open. HTTP/1.0 sets the flag
		// without a Connection line, which the rewrite would remove.
		h.ResetConnectionClose()
	}
	c.noHost = len(c.in.host) == 0 // HTTP/1.0 may omit it; send names the worker
	if c.noHost {
		c.in.host = nil
	}
	// HTTP/1.0 clients are spoken for in HTTP/1.1 (keep-alive by default
	// to the worker); the Host header goes as the client sent it (the
	// engine would otherwise rebuild it, lowercased, from the parsed URI);
	// and a body without Content-Type gets none (the engine's default is
	// application/octet-stream, which would choose the app's body parser).
	if c.http10 = !h.IsHTTP11(); c.http10 {
		h.SetProtocol("HTTP/1.1")
	}
	ctx.Request.UseHostHeader = true
	h.SetNoDefaultContentType(true)

	p.serve(c, &c.in)

	if clientClose {
		ctx.Response.SetConnectionClose()
	}
	c.reset()
	fastCalls.Put(c)
}

func (c *fastCall) reset() {
	held := c.held
	// fasthttp's client has written the whole body when Do returns: the
	// buffer can serve the next request.
	if kept := c.rb.end(true); kept != nil {
		held = kept
	}
	*c = fastCall{buf: c.buf[:0], held: held[:0], trailers: c.trailers[:0]}
}

func (c *fastCall) reqHeaders() Headers { return fastRequestHeaders{&c.ctx.Request.Header} }

func (c *fastCall) scratch() *[]byte { return &c.buf }

func (c *fastCall) balanceRequest() *Request { return &c.req }

// cookie reads the Cookie lines without the engine's cookie parser, which
// would forward them re-serialized as one line.
func (c *fastCall) cookie(name string) []byte {
	v := cookieValue(c.reqHeaders(), name)
	if v == nil {
		return nil
	}
	c.sticky = append(c.sticky[:0], v...) // the line's storage moves as the head changes
	return c.sticky
}

func (c *fastCall) watch() clientWatch { return clientWatch{conn: c.ctx.Conn()} }

func (c *fastCall) clientGone() bool { return peerClosed(c.ctx.Conn()) }

// setTarget rewrites the request target to origin form when it differs
// from what the client sent (absolute form, or a stripped prefix).
func (c *fastCall) setTarget(path []byte) {
	h := &c.ctx.Request.Header
	uri := h.RequestURI()
	if path == nil && uriAuthority(uri) == nil {
		return
	}
	if path == nil {
		path = c.in.path
	}
	rest := uri[len(uri):]
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		rest = uri[i:]
	}
	mark := len(c.buf)
	c.buf = append(c.buf, path...)
	c.buf = append(c.buf, rest...)
	c.ctx.Request.SetRequestURIBytes(c.buf[mark:]) // the Request's: it drops the parsed URI too
	c.in.path = nil                                // pointed into the old target
}

// openBody opens the request body by the buffering rule (reqBody.open).
func (c *fastCall) openBody(st *config.Proxy) *reqBody {
	b := &c.rb
	*b = reqBody{declared: c.in.contentLength}
	if b.declared == 0 || !c.ctx.Request.IsBodyStream() {
		b.declared = max(b.declared, 0)
		return b
	}
	b.open(c.ctx.RequestBodyStream(), &st.Buffering, &c.p.buffers, st.MaxBodyBytes, c.held)
	if b.buf != nil {
		c.held = nil // owned by b until the request ends
	}
	return b
}

// send makes one attempt on b through its pooled connections, or on a
// dedicated connection for an upgrade request.
func (c *fastCall) send(b *pool.Backend, st *config.Proxy, body *reqBody, upgrade []byte) error {
	u, ok := b.Upstream.(*upstream)
	if !ok {
		return &dialError{err: errors.New("backend has no upstream")}
	}
	req := &c.ctx.Request
	if c.noHost {
		req.Header.SetHost(b.Host())
	} else if len(req.Header.Host()) == 0 {
		// The client listed Host on its Connection line, and the rewrite
		// dropped it: the worker still gets the authority asked for.
		req.Header.SetHostBytes(c.in.host)
	}
	switch {
	case body.held && body.file == nil:
		req.SetBodyRaw(body.buf)
	case body.held:
		req.SetBodyStream(body.heldReader(), int(body.declared))
	case body.src != nil:
		req.SetBodyStream(body, int(body.declared))
	}
	if c.in.tls {
		// The engine parses a TLS connection's request URIs as https, and
		// the worker client refuses a scheme other than its own (http).
		req.URI().SetScheme("http")
	}
	if upgrade != nil {
		return c.sendUpgrade(u, st, body)
	}
	resp := fasthttp.AcquireResponse()
	if err := u.client().Do(req, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		if errors.Is(err, fasthttp.ErrNoFreeConns) {
			return &dialError{err: err}
		}
		return err
	}
	if err := ownHead(&resp.Header); err != nil {
		fasthttp.ReleaseResponse(resp)
		return err
	}
	if stream := resp.BodyStream(); stream != nil {
		size := resp.Header.ContentLength()
		if size == -1 {
			for name := range resp.Header.Trailers() {
				c.trailers = append(c.trailers, append([]byte(nil), name...))
			}
		}
		switch {
		case size >= 0 && size <= smallBodyLimit:
			// Read whole while the response-header deadline still runs;
			// the worker connection goes back to its pool before the
			// client's answer is written, and the engine writes a plain body.
			small := smallBodies.Get().(*smallBody)
			err := small.read(stream, size)
			_ = resp.CloseBodyStream()
			if err != nil {
				smallBodies.Put(small)
				fasthttp.ReleaseResponse(resp)
				return err
			}
			c.small = small
		default:
			liftReadDeadline(resp.RemoteAddr())
		}
	}
	c.resp = resp
	return nil
}

// sendUpgrade sends an upgrade request on a connection of its own (it may
// become a tunnel, never a pooled connection) and reads the answer's head.
func (c *fastCall) sendUpgrade(u *upstream, st *config.Proxy, body *reqBody) error {
	if body.src != nil && body.declared < 0 {
		return ErrBadRequest // a chunked body on an upgrade request
	}
	conn, err := u.dialRaw()
	if err != nil {
		return err
	}
	// Written from the parsed URI when the engine parsed one (it always
	// does, and send's scheme reset parses it again): without this the
	// path would go normalized, unlike the worker client's requests.
	c.ctx.Request.URI().DisablePathNormalizing = true
	bw := bufio.NewWriter(conn)
	if err = c.ctx.Request.Write(bw); err == nil {
		err = bw.Flush()
	}
	if err == nil {
		if d := st.ResponseHeaderTimeout; d > 0 {
			_ = conn.SetReadDeadline(time.Now().Add(d))
		}
		c.upr = bufio.NewReaderSize(conn, maxResponseHead) // the head bound of the worker client
		resp := fasthttp.AcquireResponse()
		resp.StreamBody = true
		if err = resp.Read(c.upr); err == nil {
			err = ownHead(&resp.Header)
		}
		if err == nil {
			_ = conn.SetReadDeadline(time.Time{})
			c.resp, c.up = resp, conn
			return nil
		}
		fasthttp.ReleaseResponse(resp)
	}
	_ = conn.Close()
	return err
}

func (c *fastCall) respStatus() int { return c.resp.StatusCode() }

func (c *fastCall) respHeaders() Headers { return fastResponseHeaders{&c.resp.Header} }

// drop discards the held response and closes its worker connection.
func (c *fastCall) drop() {
	c.resp.Header.SetConnectionClose()
	_ = c.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(c.resp)
	c.resp = nil
	if c.up != nil {
		_ = c.up.Close()
		c.up = nil
	}
}

// relay copies the held response head to the client's and sets its body:
// a small one copied, a larger one streamed (fin.done runs when the engine
// closes the stream), one of unknown length for an HTTP/1.0 client sent
// until the worker ends it with the connection closed after.
func (c *fastCall) relay(fin finish) {
	resp, ctx := c.resp, c.ctx
	c.resp = nil
	out := &ctx.Response
	resp.Header.CopyTo(&out.Header)
	out.Header.ResetConnectionClose()
	// The copy takes the worker client's defaults: a Content-Type the
	// worker did not send would go out as text/plain.
	out.Header.SetNoDefaultContentType(true)
	stream := resp.BodyStream()
	if c.small != nil {
		fin.bytes = int64(resp.Header.ContentLength())
		out.SetBody(c.small.buf[:fin.bytes])
		smallBodies.Put(c.small)
		c.small = nil
		stream = nil
	}
	if stream == nil {
		fasthttp.ReleaseResponse(resp)
		if c.up != nil {
			_ = c.up.Close()
			c.up = nil
		}
		fin.done(nil, nil)
		return
	}
	size := resp.Header.ContentLength()
	if size < -1 {
		size = -1 // read-until-close from the worker: re-framed as chunked
	}
	rl := relays.Get().(*relay)
	*rl = relay{body: stream, resp: resp, conn: c.up, fin: fin}
	c.up = nil
	if len(c.trailers) > 0 && size < 0 && !c.http10 {
		// Announced now, their values set when the worker's body ends:
		// the engine writes them after the last chunk.
		for _, name := range c.trailers {
			_ = out.Header.AddTrailerBytes(name)
		}
		// The relay outlives this call; the pooled call must not reuse
		// the names' backing array for the next request meanwhile.
		rl.out, rl.trailers = &out.Header, c.trailers
		c.trailers = nil
	}
	rl.client, rl.worker, rl.watch = ctx.Conn(), resp.RemoteAddr(), &c.p.stalls
	if rl.conn == nil {
		if sp := fin.spoolFor(fastResponseHeaders{&out.Header}, int64(size)); sp != nil {
			rl.startSpool(sp)
		}
	}
	rl.watch.add(rl)
	if size < 0 && c.http10 {
		c.relayUntilClose(rl)
		return
	}
	// A stream of unknown length (server-sent events, a long poll): the
	// engine would write the head with the first body bytes, which may be
	// long in coming.
	out.ImmediateHeaderFlush = size < 0
	out.SetBodyStream(rl, size)
}

// relayUntilClose sends a body of unknown length to an HTTP/1.0 client the
// way HTTP/1.0 frames it: no length, the end is the connection's close.
// Nothing is buffered: the connection is taken over from the engine.
func (c *fastCall) relayUntilClose(rl *relay) {
	ctx := c.ctx
	head := &ctx.Response.Header
	head.SetContentLength(-2)
	head.Del("Transfer-Encoding")
	head.SetConnectionClose()
	headBytes := append([]byte(nil), head.Header()...)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(cc net.Conn) {
		_, err := cc.Write(headBytes)
		if err == nil {
			_, err = io.Copy(cc, rl)
		}
		if rl.readErr != nil {
			err = nil
		}
		_ = rl.CloseWithError(err)
		_ = cc.Close() // the end of the body; the engine keeps hijacked conns open
	})
}

// tunnel answers an accepted 101 on the client's connection, taken over
// from the engine, and passes bytes both ways (the worker's bytes already
// read past the 101 head included).
func (c *fastCall) tunnel(fin finish) {
	p, ctx := c.p, c.ctx
	resp, conn, br := c.resp, c.up, c.upr
	c.resp, c.up, c.upr = nil, nil, nil
	head := append([]byte(nil), resp.Header.Header()...)
	fasthttp.ReleaseResponse(resp)
	tn := &tunnel{backend: conn}
	if !p.openTunnel(tn) {
		_ = conn.Close()
		fin.done(nil, nil)
		writeFastError(ctx, ErrNoBackend)
		return
	}
	done := fin
	client := ctx.Conn() // cc may be the engine's wrapper of it; ctx is over in the callback
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(cc net.Conn) {
		defer func() {
			p.closeTunnel(tn)
			done.done(nil, nil)
		}()
		if !tn.setClient(cc) {
			return
		}
		keepProbing(client)
		if _, err := cc.Write(head); err != nil {
			return
		}
		pipe(tn, cc, struct {
			io.Reader
			io.Writer
		}{br, conn})
	})
}

func (c *fastCall) fail(e *Error) { writeFastError(c.ctx, e) }

// fastRequestHeaders is a fasthttp request head as the pipeline's Headers.
type fastRequestHeaders struct{ h *fasthttp.RequestHeader }

func (f fastRequestHeaders) Values(name string) [][]byte { return f.h.PeekAll(name) }

// Has asks PeekAll: the engine's Peek can answer nil for a line whose
// value is empty.
func (f fastRequestHeaders) Has(name string) bool { return len(f.h.PeekAll(name)) > 0 }

// Present scans the head as it arrived. The engine's iterator over its
// parsed lines (All) would collect the Cookie lines and forward them
// re-serialized as one; the raw head names every line the parse kept, and
// later deletions only make it report more (Headers allows that). A head
// that was never parsed is asked name by name.
func (f fastRequestHeaders) Present() nameSet {
	raw := f.h.RawHeaders()
	if len(raw) == 0 {
		return confirm(f, allNames)
	}
	var has nameSet
	for len(raw) > 0 {
		var line []byte
		line, raw = nextLine(raw)
		if name, _, ok := bytes.Cut(line, strColon); ok {
			has |= nameBit(name)
		}
	}
	return has
}

// Del removes every line: fasthttp's Set would replace only the first.
func (f fastRequestHeaders) Del(name string) { f.h.Del(name) }
func (f fastRequestHeaders) Add(name string, value []byte) {
	// name is canonical: skip the engine's normalizing and validating.
	f.h.DisableNormalizing()
	f.h.AddBytesV(name, value)
	f.h.EnableNormalizing()
}

// fastResponseHeaders is a fasthttp response head as the pipeline's Headers.
// The worker client keeps the names as the worker wrote them
// (DisableHeaderNamesNormalizing), and the engine then matches names
// exactly: a line the worker named in another case ("connection",
// "keep-alive") is looked for separately, or it would pass as not there.
type fastResponseHeaders struct{ h *fasthttp.ResponseHeader }

func (f fastResponseHeaders) Values(name string) [][]byte {
	if f.otherCase(name) == nil {
		return f.h.PeekAll(name)
	}
	var vs [][]byte // rare: a worker's non-canonical name
	for k, v := range f.h.All() {
		if equalFold(k, name) {
			vs = append(vs, v)
		}
	}
	return vs
}

func (f fastResponseHeaders) Has(name string) bool {
	return len(f.h.PeekAll(name)) > 0 || f.otherCase(name) != nil
}

// otherCase returns the name of a line named name in another case, nil
// when there is none. It points into the head.
func (f fastResponseHeaders) otherCase(name string) []byte {
	for k := range f.h.All() {
		if len(k) == len(name) && string(k) != name && equalFold(k, name) {
			return k
		}
	}
	return nil
}

func (f fastResponseHeaders) Present() nameSet {
	var has nameSet
	for k := range f.h.All() {
		has |= nameBit(k)
	}
	return has
}

// Del removes the lines named name in any case.
func (f fastResponseHeaders) Del(name string) {
	f.h.Del(name)
	// A line the engine derives stays (a default Content-Type): the
	// same name found again ends the loop.
	var prev []byte
	for k := f.otherCase(name); k != nil && string(k) != string(prev); k = f.otherCase(name) {
		prev = append(prev[:0], k...)
		f.h.Del(b2s(prev))
	}
}

func (f fastResponseHeaders) Add(name string, value []byte) { f.h.AddBytesV(name, value) }

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

// relay is the client response body: it reads the worker's body and, when
// the engine closes it, runs the accounting and frees the worker slot. A
// buffered response has a spool between the two: a filler goroutine reads
// the worker's body into it and frees the slot at the worker's end, the
// engine reads the spool at the client's speed.
type relay struct {
	body    io.Reader
	resp    *fasthttp.Response
	conn    net.Conn // the dedicated connection of an upgrade request, closed at the end
	fin     finish
	readErr error
	// out and trailers: the client's response head, which gets the
	// worker's trailer values once its body has ended.
	out      *fasthttp.ResponseHeader
	trailers [][]byte
	sp       *spool
	// vals are the trailer lines (name, value, name, value...) the filler
	// copied at the worker's end, for the client side to set.
	vals [][]byte
	refs atomic.Int32 // sides still using the relay: the engine's, the filler's
	// worker is the address of the worker connection, for abortFill.
	worker net.Addr
	// client, progress, abandoned and watch: the stall watch's view (see
	// stallWatch). progress counts reads; abandoned is set once the watch
	// found the client gone.
	client    net.Conn
	progress  atomic.Uint32
	abandoned atomic.Bool
	watch     *stallWatch
}

// abandon gives up a response whose client has gone while nothing moved:
// the filler, or the engine's read of a silent worker, is stopped.
func (r *relay) abandon() {
	r.abandoned.Store(true)
	switch {
	case r.sp != nil:
		r.sp.close()
	case r.conn != nil:
		_ = r.conn.SetReadDeadline(time.Now())
	default:
		abortRead(r.worker)
	}
}

// errClientLeft is the accounting's reason for an abandoned response.
var errClientLeft = errors.New("client left while the response was stalled")

// abortFill makes the filler's read of a silent worker give up.
func (r *relay) abortFill() { abortRead(r.worker) }

var relays = sync.Pool{New: func() any { return &relay{} }}

// startSpool puts sp between the worker's body and the client.
func (r *relay) startSpool(sp *spool) {
	r.sp = sp
	sp.abort = r
	r.refs.Store(2)
	go r.fill()
}

// fill is the filler: it reads the worker's body into the spool, then
// gives the worker connection back (or closes it when the body was cut
// short) and frees the worker's slot, whatever the client is doing.
func (r *relay) fill() {
	err := r.sp.fill(r.body)
	if err == nil && r.out != nil {
		for _, name := range r.trailers {
			for _, v := range r.resp.Header.PeekAll(b2s(name)) {
				r.vals = append(r.vals, name, append([]byte(nil), v...))
			}
		}
	}
	clientLeft := err == errSpoolClosed
	if clientLeft {
		err = nil
	}
	if r.sp.finish(err) {
		clientLeft, err = true, nil // the read failed because the client left
	}
	if clientLeft || err != nil {
		r.resp.SetConnectionClose()
	}
	_ = r.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(r.resp)
	r.fin.bytes = r.sp.filled
	r.fin.workerDone(err)
	r.unref()
}

func (r *relay) unref() {
	if r.refs.Add(-1) == 0 {
		*r = relay{}
		relays.Put(r)
	}
}

// Read reads the worker's body (or its spool). A failure is kept for the
// accounting, and returned: fasthttp then drops the client connection
// instead of ending the response cleanly, so a truncated body is never
// taken for a whole one.
func (r *relay) Read(p []byte) (int, error) {
	r.progress.Add(1)
	if r.sp != nil {
		n, err := r.sp.Read(p)
		if err == errSpoolClosed {
			return n, err
		}
		if err == io.EOF && r.out != nil {
			for i := 0; i+1 < len(r.vals); i += 2 {
				r.out.AddBytesV(b2s(r.vals[i]), r.vals[i+1])
			}
			r.out = nil
		} else if err != nil && err != io.EOF {
			r.readErr = err
		}
		return n, err
	}
	n, err := r.body.Read(p)
	r.fin.bytes += int64(n)
	if err != nil && err != io.EOF && !r.abandoned.Load() {
		r.readErr = err
	}
	if err == io.EOF && r.out != nil {
		for _, name := range r.trailers {
			for _, v := range r.resp.Header.PeekAll(b2s(name)) {
				r.out.AddBytesV(b2s(name), v)
			}
		}
		r.out = nil
	}
	return n, err
}

// CloseWithError ends the stream; writeErr is the engine's error writing
// to the client, if any. The worker connection goes back to its pool, or
// is closed when its body was not read to the end. (Only CloseWithError is
// implemented: the engine calls both Close and CloseWithError when both
// exist, and the relay must be released exactly once.)
func (r *relay) CloseWithError(writeErr error) error {
	if r.watch != nil {
		r.watch.remove(r)
	}
	if r.abandoned.Load() && writeErr == nil {
		writeErr = errClientLeft
	}
	if r.sp != nil {
		readErr := r.readErr
		r.sp.close()
		if readErr == nil {
			r.fin.clientDone(writeErr)
		}
		r.unref()
		return nil
	}
	err := r.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(r.resp)
	if r.conn != nil {
		_ = r.conn.Close()
	}
	readErr := r.readErr
	if readErr != nil {
		writeErr = nil
	}
	r.fin.done(readErr, writeErr)
	*r = relay{}
	relays.Put(r)
	return err
}

// uriAuthority returns the authority of an absolute-form request target
// ("http://h.test/x" -> "h.test"), nil for any other form.
func uriAuthority(uri []byte) []byte {
	if len(uri) == 0 || uri[0] == '/' {
		return nil
	}
	i := bytes.Index(uri, schemeSep)
	if i < 0 {
		return nil
	}
	rest := uri[i+3:]
	j := 0
	for j < len(rest) && rest[j] != '/' && rest[j] != '?' {
		j++
	}
	return rest[:j]
}

// hasRawHeader reports whether raw header lines (as received) contain a
// field named name (lowercase).
func hasRawHeader(raw []byte, name string) bool {
	for len(raw) > 0 {
		var line []byte
		line, raw = nextLine(raw)
		if len(line) > len(name) && line[len(name)] == ':' && equalFold(line[:len(name)], name) {
			return true
		}
	}
	return false
}

var (
	strHTTP11 = []byte("HTTP/1.1")
	// errBadAnswer is a worker's answer head that does not parse: a 502,
	// the worker's fault, like any other the engine refuses.
	errBadAnswer = errors.New("worker answer: a header field name with a space")
)

// ownHead makes a worker's answer head corral's to send: in corral's HTTP
// version (RFC 9110 6.2; an HTTP/1.0 status line would come with a chunked
// body, which RFC 9112 6.1 has a client treat as faulty), and refused (an
// answer that does not parse: 502) when a field name has a space inside,
// which the engine keeps, flagging the connection to close.
func ownHead(h *fasthttp.ResponseHeader) error {
	if !h.IsHTTP11() {
		h.SetProtocol(strHTTP11)
	}
	if h.ConnectionClose() {
		for k := range h.All() {
			if bytes.ContainsAny(k, " \t") {
				return errBadAnswer
			}
		}
	}
	return nil
}

// nameWithSpace reports whether a raw header line has a space or tab in
// its name (before its colon). The engine refuses one before the colon;
// one inside the name it keeps. A continuation line has no name. (One
// pass over each name's bytes: bytes.Cut and ContainsAny per line cost
// 600 ns on a browser's head.)
func nameWithSpace(raw []byte) bool {
	for len(raw) > 0 {
		var line []byte
		line, raw = nextLine(raw)
		if len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			continue // an obs-fold: the line before goes on (the engine joins them)
		}
		for _, c := range line {
			if c == ':' {
				break
			}
			if c == ' ' || c == '\t' {
				return true
			}
		}
	}
	return false
}

// nextLine splits raw header lines at the first: the line (without its
// '\n') and the rest.
func nextLine(raw []byte) (line, rest []byte) {
	if i := bytes.IndexByte(raw, '\n'); i >= 0 {
		return raw[:i], raw[i+1:]
	}
	return raw, nil
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

// fastLogger sends the engine's own log lines to hclog at debug level
// (they are about individual client connections).
type fastLogger struct{ log hclog.Logger }

func (l fastLogger) Printf(format string, args ...any) {
	if l.log.IsDebug() {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}
