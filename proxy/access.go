package proxy

import (
	"math"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Access log (log.access): one line per request, written where the
// request ends in the pipeline, so both engines log alike. A relayed
// response ends when the worker's part of it does (finish.workerDone),
// the moment its latency is observed for corral_request_duration_seconds:
// the line's duration is that figure, and for a buffered response the
// client may still be reading. A request the proxy answers itself (404,
// 413, 499, 502, 503, 504) ends where the pipeline answers it.
//
// Off, the cost is one atomic load per request and a nil check at its
// end: the entry is only made when the log is on (see BenchmarkAccessLog).

// SetAccessLog turns the access log on or off for requests that start
// after the call (log.access; a reload toggles it).
func (p *Proxy) SetAccessLog(on bool) { p.access.Store(on) }

// accessEntry is one request's line in the making. What it holds of the
// request is copied: the engine reuses the request's buffers once the
// handler returns, and a buffered response ends later, on another goroutine.
type accessEntry struct {
	log       hclog.Logger
	method    string
	path      string
	client    string
	requestID string
	start     time.Time
}

// startAccess returns the entry of a request starting, nil when the access
// log is off.
func (p *Proxy) startAccess(in *inbound) *accessEntry {
	if !p.access.Load() {
		return nil
	}
	e := &accessEntry{log: p.accessLog, method: string(in.method), path: string(in.path), start: in.start}
	if in.peer.IsValid() {
		e.client = in.peer.Unmap().String()
	}
	return e
}

// setRequestID records the request id the worker was sent.
func (e *accessEntry) setRequestID(id []byte) {
	if e != nil {
		e.requestID = string(id)
	}
}

// end writes the line; worker is "" when none answered. Like a worker's
// output, it is written at info or at the logger's level when higher, so
// log.level never hides what log.access asked for.
func (e *accessEntry) end(app, worker string, status int, bytes int64) {
	if e == nil {
		return
	}
	level := max(hclog.Info, e.log.GetLevel())
	if level == hclog.Off {
		return
	}
	ms := math.Round(float64(time.Since(e.start).Microseconds())) / 1000
	e.log.Log(level, "request", "app", app, "worker", worker, "method", e.method, "path", e.path,
		"status", status, "bytes", bytes, "duration_ms", ms, "request_id", e.requestID, "client", e.client)
}

// fail answers the client with the proxy's own error and ends its line.
func (e *accessEntry) fail(x exchange, err *Error, app, worker string) {
	x.fail(err)
	if e != nil {
		n := int64(len(err.Body))
		if err == ErrClientGone {
			n = 0 // nothing is sent to a client that left
		}
		e.end(app, worker, err.Status, n)
	}
}
