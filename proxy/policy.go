package proxy

import (
	"bytes"
	"errors"
	"io"
	"math/bits"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/corral-dev/corral/config"
)

// This file holds the proxy's decisions, engine neutral and free of I/O:
// what a forwarded request and response carry (rewriteRequest,
// rewriteResponse), whether a failed attempt may be sent again (mayRetry),
// whom a failure is blamed on (blameFor) and what the client is answered
// (statusFor). The engine adapters (fast.go, std.go) only translate.

// Headers is one message's header lines as an engine holds them. Names are
// matched in any case; repeated lines are separate values. The methods
// take no callbacks: a closure handed to an interface escapes, and the
// fast path must not allocate.
type Headers interface {
	// Values returns every line named name, in order. The result is valid
	// until the next call on the Headers.
	Values(name string) [][]byte
	// Has reports whether a line named name exists.
	Has(name string) bool
	// Del removes every line named name.
	Del(name string)
	// Add appends a line. name is in canonical form (the rewrites pass
	// constants): the engine need not normalize it.
	Add(name string, value []byte)
	// Present reports which of the names the rewrites act on (nameSet)
	// the message arrived with, in one pass over its lines. It may still
	// report a name whose lines were deleted since (confirm drops those);
	// lines added since need not be reported.
	Present() nameSet
}

// nameSet is a set of the header names the rewrites look for. One pass
// over a message's lines (Headers.Present) finds which are there, so a
// rewrite looks up and deletes only those: each lookup by name scans
// every line again.
type nameSet uint32

const (
	nConnection nameSet = 1 << iota
	nKeepAlive
	nProxyConnection
	nProxyAuthorization
	nTe
	nTrailer
	nUpgrade
	nExpect
	nProxyAuthenticate
	nXForwardedFor
	nForwarded
	nXForwardedProto
	nXForwardedHost
	nXRequestStart
	nXRequestID

	allNames = nXRequestID<<1 - 1
)

// rewriteNames names each bit of a nameSet.
var rewriteNames = [...]struct {
	name string
	bit  nameSet
}{
	{"Connection", nConnection}, {"Keep-Alive", nKeepAlive}, {"Proxy-Connection", nProxyConnection},
	{"Proxy-Authorization", nProxyAuthorization}, {"Te", nTe}, {"Trailer", nTrailer},
	{"Upgrade", nUpgrade}, {"Expect", nExpect}, {"Proxy-Authenticate", nProxyAuthenticate},
	{"X-Forwarded-For", nXForwardedFor}, {"Forwarded", nForwarded},
	{"X-Forwarded-Proto", nXForwardedProto}, {"X-Forwarded-Host", nXForwardedHost},
	{"X-Request-Start", nXRequestStart}, {"X-Request-Id", nXRequestID},
}

// nameBit is name's bit in a nameSet, 0 for any other name. It runs for
// every line of every message: the length picks the one or two candidates.
func nameBit(name []byte) nameSet {
	var a, b int // indexes into rewriteNames, -1 for none
	switch len(name) {
	case 2:
		a, b = 4, -1
	case 6:
		a, b = 7, -1
	case 7:
		a, b = 5, 6
	case 9:
		a, b = 10, -1
	case 10:
		a, b = 0, 1
	case 12:
		a, b = 14, -1
	case 15:
		a, b = 9, 13
	case 16:
		a, b = 2, 12
	case 17:
		a, b = 11, -1
	case 18:
		a, b = 8, -1
	case 19:
		a, b = 3, -1
	default:
		return 0
	}
	if equalFold(name, rewriteNames[a].name) {
		return rewriteNames[a].bit
	}
	if b >= 0 && equalFold(name, rewriteNames[b].name) {
		return rewriteNames[b].bit
	}
	return 0
}

// confirm drops from has the names whose lines h no longer has.
func confirm(h Headers, has nameSet) nameSet {
	for _, n := range rewriteNames {
		if has&n.bit != 0 && !h.Has(n.name) {
			has &^= n.bit
		}
	}
	return has
}

// delPresent deletes the lines of every name in both set and has.
func delPresent(h Headers, set, has nameSet) {
	if set&has == 0 {
		return
	}
	for _, n := range rewriteNames {
		if n.bit&set&has != 0 {
			h.Del(n.name)
		}
	}
}

// first returns the first line named name, nil when there is none. The
// slice is valid until h changes.
func first(h Headers, name string) []byte {
	if vs := h.Values(name); len(vs) > 0 {
		return vs[0]
	}
	return nil
}

// hasToken reports whether any line named name lists tok.
func hasToken(h Headers, name, tok string) bool {
	found := false
	for _, v := range h.Values(name) {
		connectionTokens(v, func(t []byte) { found = found || equalFold(t, tok) })
	}
	return found
}

// requestHop names the lines dropped from every forwarded request besides
// the names listed in its Connection lines. Transfer-Encoding is absent:
// each engine frames the body it sends itself. Expect is answered at the
// edge (100-continue): passed on, the worker would wait for a second one.
const requestHop = nConnection | nKeepAlive | nProxyConnection | nProxyAuthorization | nTe | nTrailer | nUpgrade | nExpect

// responseHop names the lines dropped from every relayed response but a 101.
const responseHop = nConnection | nKeepAlive | nProxyConnection | nProxyAuthenticate | nTrailer | nUpgrade

// forwarding is what rewriteRequest adds about the client.
type forwarding struct {
	peer    netip.Addr
	trusted bool   // the peer is a trusted proxy: its forwarding headers are kept
	proto   []byte // "http" or "https"
	host    []byte // the Host the client asked for; nil when it sent none
	start   time.Time
	// ids makes corral's id when the client sent none (nil: ids are off).
	ids *requestIDs
}

// rewriteRequest turns a client's request head into the one sent to the
// worker, in place, and returns the upgrade protocol the client asked for
// ("" for none) and the request id the worker will see. buf is scratch
// space, returned for reuse.
//
// Rules: every name listed on any Connection line is dropped, then the hop
// list; an upgrade request gets back exactly "Connection: Upgrade" and its
// Upgrade line. From an untrusted peer every Forwarded and X-Forwarded-*
// line is replaced by corral's own (a duplicate line is a spoofing attempt:
// frameworks read the first or the last); from a trusted one all
// X-Forwarded-For lines are folded into one with the peer appended, and its
// other forwarding headers are kept. Corral's own headers are added last,
// so a client cannot remove them by naming them in Connection.
func rewriteRequest(h Headers, f *forwarding, buf []byte) (upgrade, reqID, out []byte) {
	has := h.Present()
	// Read before the listed names go: a TE line comes with a TE
	// connection option (RFC 9110 10.1.4).
	teTrailers := has&nTe != 0 && hasToken(h, "Te", "trailers")
	if has&nConnection != 0 {
		if has&nUpgrade != 0 {
			if upgrade = upgradeRequested(h); upgrade != nil {
				upgrade = append(buf[:0], upgrade...) // survives the Del below
				buf = upgrade[len(upgrade):]
			}
		}
		if more := dropListed(h, buf, "upgrade"); len(more) > len(buf) {
			buf = more
			has = confirm(h, has) // without the listed names
		}
	}
	delPresent(h, requestHop, has)
	if teTrailers {
		h.Add("Te", strTrailers) // gRPC over HTTP/1.1 asks for trailers this way
	}
	if upgrade != nil {
		h.Add("Connection", strUpgrade)
		h.Add("Upgrade", upgrade)
	}

	mark := len(buf)
	if f.trusted && has&nXForwardedFor != 0 {
		for _, v := range h.Values("X-Forwarded-For") {
			buf = append(buf, v...)
			buf = append(buf, ", "...)
		}
	}
	buf = f.peer.AppendTo(buf)
	xff := buf[mark:]
	own := nXForwardedFor | nXRequestStart | nXRequestID // always corral's
	if !f.trusted {
		own |= nForwarded | nXForwardedProto | nXForwardedHost
	}
	// A client's own X-Request-Id is kept (read before the delete).
	mark = len(buf)
	if has&nXRequestID != 0 {
		buf = append(buf, first(h, "X-Request-Id")...)
	}
	if len(buf) == mark && f.ids != nil {
		buf = f.ids.appendNext(buf)
	}
	id := buf[mark:]
	delPresent(h, own, has)
	h.Add("X-Forwarded-For", xff)
	if own&nXForwardedProto != 0 || has&nXForwardedProto == 0 {
		h.Add("X-Forwarded-Proto", f.proto)
	}
	if (own&nXForwardedHost != 0 || has&nXForwardedHost == 0) && f.host != nil {
		h.Add("X-Forwarded-Host", f.host)
	}
	mark = len(buf)
	buf = appendRequestStart(buf, f.start)
	h.Add("X-Request-Start", buf[mark:])
	if len(id) > 0 {
		reqID = id
		h.Add("X-Request-Id", reqID)
	}
	return upgrade, reqID, buf
}

var (
	strHTTP     = []byte("http")
	strHTTPS    = []byte("https")
	strTrailers = []byte("trailers")
	strUpgrade  = []byte("Upgrade")
)

// upgradeRequested returns the protocol a request asks to switch to, or
// nil. h2c is answered on this hop (prior knowledge only), never passed on.
func upgradeRequested(h Headers) []byte {
	if !hasToken(h, "Connection", "upgrade") {
		return nil
	}
	up := first(h, "Upgrade")
	if len(trimSpace(up)) == 0 || equalFold(trimSpace(up), "h2c") {
		return nil
	}
	return up
}

// rewriteResponse drops a worker response's hop-by-hop lines in place; a
// 101 keeps its Connection and Upgrade lines (they are the switch itself).
func rewriteResponse(h Headers, status int, buf []byte) []byte {
	if status == 101 {
		return buf
	}
	has := h.Present()
	if has&nConnection != 0 {
		buf = dropListed(h, buf, "")
	}
	delPresent(h, responseHop, has)
	return buf
}

// cookieValue returns the value of the first cookie named name on h's
// Cookie lines (RFC 6265 5.4: "name=value" pairs split by ";"), without
// its quotes; nil when there is none. The slice is valid until h changes.
func cookieValue(h Headers, name string) []byte {
	for _, line := range h.Values("Cookie") {
		for len(line) > 0 {
			pair := line
			if i := bytes.IndexByte(line, ';'); i >= 0 {
				pair, line = line[:i], line[i+1:]
			} else {
				line = nil
			}
			k, v, ok := bytes.Cut(pair, strEquals)
			if !ok || string(trimSpace(k)) != name {
				continue
			}
			v = trimSpace(v)
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return nil
}

var strEquals = []byte("=")

// dropListed removes the lines named on h's Connection lines, but the
// connection options close, keep-alive and keep (if not ""). The names
// are copied to buf first: they point into storage that Del changes.
func dropListed(h Headers, buf []byte, keep string) []byte {
	var listed [8][]byte
	names := listed[:0]
	for _, v := range h.Values("Connection") {
		connectionTokens(v, func(tok []byte) {
			if equalFold(tok, "close") || equalFold(tok, "keep-alive") || (keep != "" && equalFold(tok, keep)) {
				return
			}
			buf = append(buf, tok...)
			names = append(names, buf[len(buf)-len(tok):])
		})
	}
	for _, n := range names {
		h.Del(b2s(n))
	}
	return buf
}

// bufferResponse is the rule for which worker responses are read ahead of
// the client (proxy.buffering, README: Slow clients). size is the body's
// Content-Length, -1 when unknown. Event streams never are (they last as
// long as the client stays; a stalled client would fill the disk tier),
// nor are responses the app marks X-Accel-Buffering: no. "yes" buffers one
// even when chunked = false. Bodies of at most smallBodyLimit never are:
// they arrive with their head and fit any socket buffer. Upgrades never
// reach this.
func bufferResponse(b *config.Buffering, h Headers, size int64) bool {
	if (size >= 0 && size <= smallBodyLimit) || (b.ResponseMemory <= 0 && b.ResponseDisk <= 0) {
		return false // a small body is taken whole with its head, or by the socket
	}
	for _, v := range h.Values("X-Accel-Buffering") {
		switch {
		case equalFold(v, "no"):
			return false
		case equalFold(v, "yes"):
			return true
		}
	}
	for _, v := range h.Values("Content-Type") {
		if len(v) >= len("text/event-stream") && equalFold(v[:len("text/event-stream")], "text/event-stream") {
			return false
		}
	}
	return size > 0 || b.Chunked
}

// upgradeAccepted reports whether a worker's 101 switches to the protocol
// the client asked for: a 101 for anything else, or for a request that
// asked for nothing, must not open a tunnel.
func upgradeAccepted(asked []byte, h Headers) bool {
	if asked == nil {
		return false
	}
	conn := hasToken(h, "Connection", "upgrade")
	up := trimSpace(first(h, "Upgrade"))
	return conn && len(up) > 0 && equalFold(up, string(trimSpace(asked))) && printable(up)
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// stage is how far an attempt got before it failed.
type stage uint8

const (
	// sentNothing: no byte of the request reached the worker (dial failed,
	// the pooled connection was found closed, no free connection).
	sentNothing stage = iota
	// sentPartial: some or all of the request was written, no response head
	// arrived. When unsure, an attempt is recorded at this later stage.
	sentPartial
)

// stageOf tells how far a failed attempt got from its error.
func stageOf(err error) stage {
	var de *dialError
	if errors.As(err, &de) {
		return sentNothing
	}
	return sentPartial
}

// blame is who a failure is on.
type blame uint8

const (
	blameWorker blame = iota // feeds passive health, counted as a worker error
	blameClient              // the client left, stalled or sent a bad body: 499/408/400, never the worker's
	blameCorral              // routing, queue, limits: corral's own answer
)

// retryPolicy is one request's retry budget.
type retryPolicy struct {
	left       int
	deadline   time.Time
	idempotent bool // method or Idempotency-Key says sending twice is safe
}

// mayRetry reports whether a failed attempt may be sent again (to another
// worker), and spends one try when it may. The body rule comes first: a
// body is resent only when corral holds all of it, or when not one byte of
// it has left. Then: an attempt that sent nothing may go again for any
// method; one that sent something only for an idempotent request that did
// not time out (the worker may be working on it). Nothing is retried once a
// response head arrived: such attempts never come here.
func (p *retryPolicy) mayRetry(err error, body *reqBody, now time.Time) bool {
	if p.left <= 0 || (!p.deadline.IsZero() && now.After(p.deadline)) {
		return false
	}
	var own *Error
	if errors.As(err, &own) {
		return false
	}
	if !body.replayable() && body.touched() {
		return false
	}
	if stageOf(err) == sentPartial && (!p.idempotent || isTimeout(err)) {
		return false
	}
	p.left--
	return true
}

// blameFor says whose failure err is. A body the client did not deliver
// whole is the client's whatever error the engine reported for it.
func blameFor(err error, body *reqBody, clientGone bool) blame {
	var own *Error
	switch {
	case body.clientErr != nil || clientGone:
		return blameClient
	case errors.As(err, &own):
		return blameCorral
	default:
		return blameWorker
	}
}

// statusFor is the one map from a failure to the client's answer: the
// proxy's own errors as they are; a client that stalled 408, sent a broken
// body 400, or left 499 (counted, never sent); a worker timeout 504; every
// other worker failure 502.
func statusFor(err error, b blame, body *reqBody) *Error {
	switch b {
	case blameClient:
		ce := body.clientErr
		switch {
		case ce == nil || errors.Is(ce, io.ErrUnexpectedEOF) || errors.Is(ce, io.EOF):
			return ErrClientGone
		case isTimeout(ce):
			return ErrReadTimeout
		case errors.Is(ce, ErrBodyTooLarge):
			return ErrBodyTooLarge
		default:
			var own *Error
			if errors.As(ce, &own) {
				return own
			}
			if isConnError(ce) {
				return ErrClientGone
			}
			return ErrBadRequest
		}
	case blameCorral:
		var own *Error
		errors.As(err, &own)
		return own
	}
	if isTimeout(err) {
		return ErrGatewayTimeout
	}
	return ErrBadGateway
}

// idempotentMethod reports whether a request with this method may be sent
// twice. A request carrying Idempotency-Key is idempotent by declaration.
func idempotentMethod(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "PUT", "DELETE":
		return true
	}
	return false
}

// reqBody is a client's request body as the pipeline sends it: either held
// whole (buf, replayable on any attempt) or streamed from the client once.
// It counts what it reads and records why the client's side ended early,
// so a short or broken upload is the client's failure and is never passed
// on as a complete request.
type reqBody struct {
	src      io.Reader // the client's stream; nil when the body is held whole or absent
	declared int64     // Content-Length; -1 unknown (chunked or HTTP/2 without one)
	limit    int64     // max_body_bytes for a body of unknown length, 0 none
	buf      []byte    // the whole body, when held in memory
	file     *os.File  // the whole body, when held in a temporary file
	held     bool      // buf or file is the whole body
	read     int64     // bytes read from src
	// acct and reserved: memory of a held body counted against the
	// buffering memory limit until the request ends.
	acct     *buffers
	reserved int64
	diskHeld int64 // bytes counted against the disk limit
	// clientErr is why reading the client's body failed: io.ErrUnexpectedEOF
	// for a body that ended before its Content-Length, a timeout for a
	// client that stalled, ErrBodyTooLarge past the limit.
	clientErr error
}

// open decides how a client's body of the declared length goes to the
// worker (README: Slow clients): read whole into memory, or into a
// temporary file, before a worker is chosen (so a slow upload holds no
// worker slot, and the body can be sent again on a retry), or streamed at
// the client's speed when larger than both tiers or of unknown length.
// reuse is a buffer the caller keeps across requests. A body held whole
// but cut short by the client is reported by clientErr.
func (b *reqBody) open(src io.Reader, buf *config.Buffering, acct *buffers, maxBody int64, reuse []byte) {
	b.src = src
	n := b.declared
	switch {
	case n > 0 && n <= buf.RequestMemory && acct.reserve(heldSize(n, reuse), buf.MemoryLimit):
		b.acct, b.reserved = acct, heldSize(n, reuse)
		if int64(cap(reuse)) < n {
			reuse = getHeld(int(n))
		}
		b.hold(reuse)
	case n > 0 && n <= buf.RequestDisk && acct.reserveDisk(n, buf.DiskLimit):
		b.acct, b.diskHeld = acct, n
		if !b.holdFile(buf.Dir, acct) {
			b.held = false // no temporary file: stream
		}
	case n < 0:
		b.limit = maxBody
	}
}

// holdFile reads the body whole into a temporary file (unlinked at once).
// It reports false, with nothing read, when no file could be made. When
// writing the file fails (disk full), the body is not held after all: what
// was written is streamed from the file, then the rest from the client.
func (b *reqBody) holdFile(dir string, acct *buffers) bool {
	f, err := os.CreateTemp(dir, "corral-body-")
	if err != nil {
		acct.fileFailed(true, dir, err)
		return false
	}
	_ = os.Remove(f.Name())
	acct.files.Add(1)
	b.acct, b.file, b.held = acct, f, true
	src := b.src
	b.src = nil
	blk := spoolBlocks.Get().(*block)
	defer spoolBlocks.Put(blk)
	var written int64
	for written < b.declared {
		n, rerr := src.Read(blk[:min(int64(len(blk)), b.declared-written)])
		b.read += int64(n)
		if n > 0 {
			w, werr := f.Write(blk[:n])
			written += int64(w)
			if werr != nil {
				acct.fileFailed(true, dir, werr)
				// The file's failure, not the client's: stream instead,
				// what is on file first, then what was read and not
				// written, then the rest from the client. The body is no
				// longer replayable (it is not held).
				rest := append([]byte(nil), blk[w:n]...)
				b.held, b.read = false, 0
				b.src = io.MultiReader(io.NewSectionReader(f, 0, written), bytes.NewReader(rest), src)
				return true
			}
		}
		switch {
		case rerr == io.EOF && written < b.declared:
			b.clientErr = io.ErrUnexpectedEOF
			return true
		case rerr != nil && rerr != io.EOF:
			b.clientErr = rerr
			return true
		}
	}
	return true
}

// heldReader returns a reader of the whole held body, from its start.
func (b *reqBody) heldReader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.declared)
	}
	return bytes.NewReader(b.buf)
}

// end frees what a held body took, once the request is over. It returns a
// memory buffer the caller may keep for the next request, or nil. reuse is
// false when an engine may still be writing the buffer after the request
// (net/http's transport can go on sending a body after the worker has
// answered): the buffer is then left to the garbage collector, never
// handed to another request.
func (b *reqBody) end(reuse bool) []byte {
	if b.file != nil {
		_ = b.file.Close()
		b.acct.files.Add(-1)
		b.file = nil
	}
	if b.diskHeld > 0 {
		b.acct.disk.Add(-b.diskHeld)
		b.diskHeld = 0
	}
	if b.reserved > 0 {
		b.acct.free(b.reserved)
		b.reserved = 0
	}
	keep := b.buf
	b.buf = nil
	if !reuse {
		return nil
	}
	if cap(keep) > bodyBufferLimit {
		putHeld(keep)
		return nil
	}
	return keep
}

// replayable reports whether the body can be sent again from the start.
func (b *reqBody) replayable() bool { return b.held || (b.src == nil && b.declared <= 0) }

// touched reports whether any byte of a streamed body was read.
func (b *reqBody) touched() bool { return b.read > 0 }

// hold reads a body of known length (at most max bytes) whole into dst.
// It reports false when the client did not deliver it; clientErr says why.
func (b *reqBody) hold(dst []byte) bool {
	n := int(b.declared)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	m, err := io.ReadFull(b.src, dst)
	b.read += int64(m)
	b.buf, b.held, b.src = dst, true, nil
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.clientErr = err
		return false
	}
	return true
}

// Read reads the streamed body; it never reports a clean end before the
// declared length (the engines would otherwise end the worker's request
// early as if it were whole).
func (b *reqBody) Read(p []byte) (int, error) {
	if b.clientErr != nil {
		return 0, b.clientErr
	}
	if b.declared >= 0 {
		if left := b.declared - b.read; left <= 0 {
			return 0, io.EOF
		} else if int64(len(p)) > left {
			p = p[:left]
		}
	} else if b.limit > 0 && int64(len(p)) > b.limit-b.read+1 {
		p = p[:b.limit-b.read+1]
	}
	n, err := b.src.Read(p)
	b.read += int64(n)
	switch {
	case b.declared < 0 && b.limit > 0 && b.read > b.limit:
		b.clientErr = ErrBodyTooLarge
		return 0, b.clientErr
	case err == io.EOF && b.declared >= 0 && b.read < b.declared:
		b.clientErr = io.ErrUnexpectedEOF
		return n, b.clientErr
	case err != nil && err != io.EOF:
		b.clientErr = err
		return n, err
	case b.declared >= 0 && b.read == b.declared:
		return n, io.EOF
	}
	return n, err
}

// Close does nothing: the engines close a request body after each attempt,
// and a held body must survive for the next.
func (b *reqBody) Close() error { return nil }

// failureReason names a failure for the ejection log line.
func failureReason(err error) string {
	switch {
	case stageOf(err) == sentNothing:
		return "connection failed"
	case isTimeout(err):
		return "timeout"
	default:
		return "connection error"
	}
}

// heldPools keep memory buffers for held request bodies larger than the
// per-call buffer, by power-of-two size class, so a stream of 1 MiB
// uploads does not allocate (and zero) 1 MiB each.
var heldPools [31]sync.Pool

// heldSize is the memory a held body of n bytes takes: reuse when it is
// large enough, else a buffer of n's size class.
func heldSize(n int64, reuse []byte) int64 {
	if int64(cap(reuse)) >= n {
		return n
	}
	return 1 << bits.Len(uint(n-1))
}

func getHeld(n int) []byte {
	k := bits.Len(uint(n - 1))
	if k < len(heldPools) {
		if v, ok := heldPools[k].Get().(*[]byte); ok {
			return (*v)[:0]
		}
	}
	return make([]byte, 0, 1<<k)
}

func putHeld(b []byte) {
	k := bits.Len(uint(cap(b) - 1))
	if k < len(heldPools) && cap(b) == 1<<k {
		b = b[:0]
		heldPools[k].Put(&b)
	}
}
