package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
)

// Error is a failure the proxy answers itself. Its status and body are what
// the client sees; nothing internal (addresses, Go errors) leaks into them.
type Error struct {
	// Status is the HTTP status code sent (499 is counted, never sent).
	Status int
	// Body is the short plain-text body.
	Body string
	// RetryAfter is the Retry-After value in seconds, "" for none.
	RetryAfter string
	// Close asks for Connection: close because the connection state is unclear.
	Close bool
}

// Error returns the body without its newline.
func (e *Error) Error() string { return e.Body[:len(e.Body)-1] }

// Failures the proxy answers itself.
var (
	ErrNoRoute        = &Error{Status: 404, Body: "404 no app for this host and path\n"}
	ErrNoBackend      = &Error{Status: 503, Body: "503 no worker available\n", RetryAfter: "1"}
	ErrQueueFull      = &Error{Status: 503, Body: "503 server busy, queue full\n", RetryAfter: "1"}
	ErrQueueTimeout   = &Error{Status: 503, Body: "503 server busy, queue timeout\n", RetryAfter: "1"}
	ErrBadGateway     = &Error{Status: 502, Body: "502 bad gateway\n"}
	ErrGatewayTimeout = &Error{Status: 504, Body: "504 gateway timeout\n"}
	// 413 keeps the connection: the engines discard a small unread rest of
	// the body and close by themselves when too much is left, so the client
	// is not reset before it reads the answer.
	ErrBodyTooLarge   = &Error{Status: 413, Body: "413 request body too large\n"}
	ErrHeaderTooLarge = &Error{Status: 431, Body: "431 request header fields too large\n", Close: true}
	ErrBadRequest     = &Error{Status: 400, Body: "400 bad request\n", Close: true}
	ErrReadTimeout    = &Error{Status: 408, Body: "408 request timeout\n", Close: true}
	ErrClientGone     = &Error{Status: 499, Body: "499 client closed request\n", Close: true}
	// ErrNoDescriptors: corral had no file descriptor for a worker
	// connection. Its own shortage, not the worker's failure.
	ErrNoDescriptors = &Error{Status: 503, Body: "503 server busy\n", RetryAfter: "1"}
)

// dialError marks a failure to connect to a worker: the request was not
// sent, so any method may be retried elsewhere.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dialing worker: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialFailed marks err, a failed connect to a worker, as a dial error; when
// corral itself is out of file descriptors it is ErrNoDescriptors as well
// (corral's answer: no retry, no strike against the worker), and logged
// once a minute at most.
func (p *Proxy) dialFailed(err error) error {
	if outOfResources(err) {
		if p.starved.dialWarned.due() {
			limit, _ := fileLimit()
			p.log.Warn("out of file descriptors: requests that need a new worker connection get 503",
				"error", err, "file_limit", limit,
				"hint", "raise the file limit (ulimit -n, LimitNOFILE=) or lower proxy.max_connections")
		}
		err = fmt.Errorf("%w: %w", ErrNoDescriptors, err)
	}
	return &dialError{err: err}
}

// isTimeout reports whether err is a deadline or timeout error, but not a
// dial timeout (the worker did not accept: that is a connection failure).
func isTimeout(err error) bool {
	var de *dialError
	if errors.As(err, &de) {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var t interface{ Timeout() bool }
	if errors.As(err, &t) && t.Timeout() {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// isConnError reports whether err is a broken or closed connection (the
// peer reset or went away), as opposed to a malformed message.
func isConnError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
