package proxy

import (
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// inbound is what the pipeline reads of a client's request, filled once by
// the engine adapter.
type inbound struct {
	method []byte
	// host is the authority the client asked for: the Host header, or the
	// authority of an absolute-form target (which wins, RFC 9112 3.2.2).
	host []byte
	// path is the raw (undecoded) path of the target, for routing on both
	// engines alike: the worker decodes it, corral never does.
	path          []byte
	contentLength int64 // -1 unknown
	peer          netip.Addr
	tls           bool
	start         time.Time
}

// exchange is one client request as an engine adapter presents it to the
// pipeline. The pipeline decides; the adapter translates to its engine.
type exchange interface {
	// reqHeaders is the request head, rewritten in place for the worker.
	reqHeaders() Headers
	// setTarget sets the origin-form target sent to the worker.
	setTarget(path []byte)
	// openBody opens the request body under the current settings.
	openBody(st *config.Proxy) *reqBody
	// cookie returns the value of the named request cookie, nil if absent.
	cookie(name string) []byte
	// watch is how a queued request notices that its client left.
	watch() clientWatch
	// clientGone reports whether the client went away.
	clientGone() bool
	// scratch is per-request scratch space for header values.
	scratch() *[]byte
	// balanceRequest is per-request storage for what balancing reads
	// (it may wait in a queue, so it cannot live on the pipeline's stack).
	balanceRequest() *Request
	// send makes one attempt: it forwards the request to b and, on success,
	// holds the response head. upgrade is the protocol asked for, or nil.
	send(b *pool.Backend, st *config.Proxy, body *reqBody, upgrade []byte) error
	// respStatus and respHeaders describe the held response.
	respStatus() int
	respHeaders() Headers
	// relay sends the held response to the client; fin.done runs once when
	// the worker's part of it is over (maybe after relay returned).
	relay(fin finish)
	// tunnel answers an accepted 101 and passes bytes both ways.
	tunnel(fin finish)
	// drop discards the held response and its worker connection.
	drop()
	// fail answers the client with the proxy's own error.
	fail(e *Error)
}

// errBadUpgrade is a 101 that does not switch to the protocol asked for.
var errBadUpgrade = errors.New("worker answered 101 for another protocol")

// errBadStatus is a response status outside 100..599, which RFC 9110
// section 15 calls invalid: relayed, a client could take "999" for anything.
var errBadStatus = errors.New("worker answered a status outside 100..599")

// refusedHead reports whether err is a response head that arrived and was
// refused; like any answer that arrived, it is never retried.
func refusedHead(err error) bool { return err == errBadUpgrade || err == errBadStatus }

// serve is the one request pipeline: route, rewrite once, admit (slot or
// queue), then attempts until one gets a response head or the retry rules
// say stop, then relay or tunnel, then accounting. Both engines run it.
func (p *Proxy) serve(x exchange, in *inbound) {
	st := p.settings.Load()
	acc := p.startAccess(in)
	if st.MaxBodyBytes > 0 && in.contentLength > st.MaxBodyBytes {
		acc.fail(x, ErrBodyTooLarge, "", "")
		return
	}
	rt := p.router.Load().match(b2s(in.host), b2s(in.path))
	if rt == nil {
		acc.fail(x, ErrNoRoute, "", "")
		return
	}
	t := rt.src.Table()
	if t == nil {
		acc.fail(x, ErrNoBackend, rt.name, "")
		return
	}

	fw := forwarding{
		peer:    in.peer,
		trusted: len(st.TrustedProxies) > 0 && trusted(st.TrustedProxies, in.peer),
		proto:   strHTTP,
		host:    in.host,
		start:   in.start,
	}
	if in.tls {
		fw.proto = strHTTPS
	}
	if st.RequestID {
		fw.ids = p.ids
	}
	buf := x.scratch()
	upgrade, reqID, out := rewriteRequest(x.reqHeaders(), &fw, *buf)
	*buf = out // before setTarget, which appends to it
	acc.setRequestID(reqID)
	if rt.strip && rt.prefix != "" && hasPathPrefix(b2s(in.path), rt.prefix) {
		x.setTarget([]byte(rt.strippedPath(b2s(in.path))))
	} else {
		x.setTarget(nil)
	}

	body := x.openBody(st)
	if body.held && body.clientErr != nil {
		p.clientFailed(rt, t, nil, x, body, in.start, acc)
		return
	}
	// A held body (or what of it was read before a full disk made it
	// stream) took as long as the client took to send it: the workers in
	// rotation now are the ones to pick from, since a roll may have
	// replaced every worker of the table the request arrived with.
	if nt := rt.src.Table(); nt != nil {
		t = nt
	}

	req := x.balanceRequest()
	*req = Request{ClientIP: in.peer}
	if rt.cookieName != "" {
		req.Sticky = x.cookie(rt.cookieName)
	}
	policy := retryPolicy{
		left:       t.App.Retries,
		idempotent: idempotentMethod(in.method) || x.reqHeaders().Has("Idempotency-Key"),
	}
	if t.App.RetryTimeout > 0 {
		policy.deadline = in.start.Add(t.App.RetryTimeout)
	}
	req.now = in.start.UnixNano()
	for try := 0; ; try++ {
		if try > 0 {
			req.now = time.Now().UnixNano()
		}
		req.max = int64(t.App.MaxInflight)
		b, err := acquire(rt, t, req, x.watch())
		if err != nil {
			if err == ErrClientGone {
				p.log.Debug("client left while queued", "app", rt.name)
			}
			acc.fail(x, err.(*Error), rt.name, "")
			return
		}
		err = x.send(b, st, body, upgrade)
		if err == nil {
			switch status := x.respStatus(); {
			case status < 100 || status > 599:
				x.drop()
				err = errBadStatus
			case status == 101 && !upgradeAccepted(upgrade, x.respHeaders()):
				x.drop()
				err = errBadUpgrade
			default:
				p.answer(x, st, rt, t, b, req, in.start, status, reqID, acc)
				return
			}
		}
		release(rt, b)
		now := time.Now()
		who := blameFor(err, body, x.clientGone())
		if who == blameClient {
			p.clientFailed(rt, t, b, x, body, in.start, acc)
			return
		}
		if err != errStaleConn && who == blameWorker {
			passiveFailure(p.log, t, b, now, failureReason(err))
		}
		if !refusedHead(err) && policy.mayRetry(err, body, now) {
			t.Stats.Retries.Add(1)
			p.log.Debug("retrying request", "app", rt.name, "worker", b.ID, "error", err)
			req.avoid = b
			if nt := rt.src.Table(); nt != nil {
				t = nt
			}
			continue
		}
		e := statusFor(err, who, body)
		b.Stats.Observe(e.Status, now.Sub(in.start))
		if who == blameWorker {
			b.Stats.Errors.Add(1)
		}
		p.log.Debug("request failed", "app", rt.name, "worker", b.ID, "status", e.Status, "error", err)
		acc.fail(x, e, rt.name, b.ID)
		return
	}
}

// answer relays a worker's response head (and then its body or tunnel).
func (p *Proxy) answer(x exchange, st *config.Proxy, rt *route, t *pool.Table, b *pool.Backend, req *Request, start time.Time, status int, reqID []byte, acc *accessEntry) {
	if status >= 500 && t.App.Passive.Count5xx {
		passiveFailure(p.log, t, b, time.Now(), "status "+strconv.Itoa(status))
	} else {
		passiveSuccess(b, req.now)
	}
	h := x.respHeaders()
	buf := x.scratch()
	*buf = rewriteResponse(h, status, *buf)
	if reqID != nil {
		h.Del("X-Request-Id")
		h.Add("X-Request-Id", reqID)
	}
	if rt.cookieName != "" && string(req.Sticky) != b.ID {
		h.Add("Set-Cookie", []byte(rt.cookieName+"="+b.ID+"; Path=/; HttpOnly; SameSite=Lax"))
	}
	fin := finish{rt: rt, t: t, b: b, start: start, status: status, log: p.log, buf: &st.Buffering, acct: &p.buffers, access: acc}
	if status == 101 {
		x.tunnel(fin)
		return
	}
	x.relay(fin)
}

// clientFailed answers a request whose client left, stalled or sent a
// broken body. It is never the worker's failure: nothing feeds passive
// health. b is the backend of the attempt, nil if none was made.
func (p *Proxy) clientFailed(rt *route, t *pool.Table, b *pool.Backend, x exchange, body *reqBody, start time.Time, acc *accessEntry) {
	e := statusFor(nil, blameClient, body)
	if e == ErrClientGone {
		t.Stats.ClientCancelled.Add(1)
	}
	worker := ""
	if b != nil {
		b.Stats.Observe(e.Status, time.Since(start))
		worker = b.ID
	}
	p.log.Debug("client failed", "app", rt.name, "status", e.Status, "error", body.clientErr)
	acc.fail(x, e, rt.name, worker)
}

// finish is the accounting of one relayed response, run once when the
// worker's part of it ends: the body was read, the client left, or the
// worker failed mid-body.
type finish struct {
	rt     *route
	t      *pool.Table
	b      *pool.Backend
	start  time.Time
	status int
	log    hclog.Logger
	buf    *config.Buffering
	acct   *buffers
	// bytes counts the response body read from the worker, kept by the
	// engine adapter; access is the request's access log entry, nil when
	// the log is off.
	bytes  int64
	access *accessEntry
}

// spoolFor returns a spool for a response body of size bytes (-1 unknown)
// with head h, or nil when the response is relayed unbuffered: the rule
// says so, or the memory limit is reached.
func (f *finish) spoolFor(h Headers, size int64) *spool {
	if !bufferResponse(f.buf, h, size) {
		return nil
	}
	return newSpool(f.acct, spoolLimits{
		memory: f.buf.ResponseMemory, limit: f.buf.MemoryLimit,
		disk: f.buf.ResponseDisk, diskLimit: f.buf.DiskLimit, dir: f.buf.Dir,
	})
}

// done records the response and frees the worker's slot. readErr is a
// failure reading the worker's body (the worker's fault); writeErr a
// failure writing to the client (the client's).
func (f *finish) done(readErr, writeErr error) {
	if readErr == nil {
		f.clientDone(writeErr)
	}
	f.workerDone(readErr)
}

// workerDone is the worker's part: the response was read from it (or it
// failed, readErr), so its slot is free. For a buffered response this comes
// before the client has it all.
func (f *finish) workerDone(readErr error) {
	if readErr != nil {
		f.log.Debug("worker failed mid-response", "app", f.rt.name, "worker", f.b.ID, "error", readErr)
		passiveFailure(f.log, f.t, f.b, time.Now(), "connection error")
	}
	f.b.Stats.Observe(f.status, time.Since(f.start))
	release(f.rt, f.b)
	f.access.end(f.rt.name, f.b.ID, f.status, f.bytes)
}

// clientDone is the client's part: writeErr is why it did not get the
// whole response, nil when it did.
func (f *finish) clientDone(writeErr error) {
	if writeErr != nil {
		f.t.Stats.ClientCancelled.Add(1)
		f.log.Debug("client left mid-response", "app", f.rt.name, "worker", f.b.ID, "error", writeErr)
	}
}
