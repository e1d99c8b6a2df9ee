package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/corral-dev/corral/config"
)

// maxBodyBytes bounds how much of a health answer is read: a worker that
// streams a huge body must not cost the prober more than this.
const maxBodyBytes = 64 << 10

// maxReasonLen keeps reasons short enough for a log line and a status table.
const maxReasonLen = 120

// userAgent lets worker logs tell probes from real traffic.
const userAgent = "corral-health"

// StatusError is the failure of an HTTP probe answered with a status code
// that is not accepted.
type StatusError struct {
	// Code is the HTTP status the worker answered.
	Code int
}

// Error returns the reason in the form shown to users ("status 503").
func (e *StatusError) Error() string { return fmt.Sprintf("status %d", e.Code) }

// TimeoutError is a probe that did not finish within the configured timeout.
type TimeoutError struct {
	// After is the probe timeout that expired.
	After time.Duration
	// Err is the underlying error from the dial, request or body read.
	Err error
}

// Error returns the reason in the form shown to users ("timeout after 1s").
func (e *TimeoutError) Error() string { return "timeout after " + e.After.String() }

// Unwrap returns the underlying error.
func (e *TimeoutError) Unwrap() error { return e.Err }

// network returns the network a worker's address is on: an absolute path
// is a Unix socket, anything else host:port.
func network(addr string) string {
	if strings.HasPrefix(addr, "/") {
		return "unix"
	}
	return "tcp"
}

// urlHost returns the host part of a probe's URL for addr: a socket has
// none, so its requests name localhost.
func urlHost(addr string) string {
	if network(addr) == "unix" {
		return "localhost"
	}
	return addr
}

// newTransport returns the private transport of one probe of the worker at
// addr. It is separate from every other client in the process so a probe's
// connection to its worker is neither shared with nor starved by the proxy.
func newTransport(addr string) *http.Transport {
	dialer := &net.Dialer{}
	return &http.Transport{
		// Proxy stays nil: HTTP_PROXY from the environment must never
		// redirect a loopback probe.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network(addr), addr)
		},
		MaxIdleConns:           1,
		MaxIdleConnsPerHost:    1,
		IdleConnTimeout:        90 * time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxBodyBytes,
	}
}

// newClient returns an http.Client that reports redirects instead of
// following them: a 3xx proves the worker answers, and following it could
// leave the worker.
func newClient(t *http.Transport) *http.Client {
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// checkHTTP does one HTTP GET against addr and returns the status on
// success. The caller's ctx carries the probe timeout.
func checkHTTP(ctx context.Context, client *http.Client, spec *config.Health, addr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+urlHost(addr)+spec.Path, nil)
	if err != nil {
		return 0, fmt.Errorf("building request: %w", err)
	}
	if spec.Host != "" {
		req.Host = spec.Host
	}
	req.Header.Set("User-Agent", userAgent)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	// Reading a bounded prefix lets a small answer end cleanly so the
	// connection is kept alive; closing early drops a huge one instead.
	_, readErr := io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyBytes))
	resp.Body.Close()
	if !accepted(spec.ExpectStatus, resp.StatusCode) {
		return resp.StatusCode, &StatusError{Code: resp.StatusCode}
	}
	if readErr != nil {
		return resp.StatusCode, fmt.Errorf("reading body: %w", readErr)
	}
	return resp.StatusCode, nil
}

// accepted reports whether status passes: one of expect, or any 2xx/3xx
// when expect is empty.
func accepted(expect []int, status int) bool {
	if len(expect) == 0 {
		return status >= 200 && status < 400
	}
	for _, code := range expect {
		if code == status {
			return true
		}
	}
	return false
}

// checkTCP connects to addr (host:port or a socket path) and closes the connection at once.
func checkTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network(addr), addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// classify turns a raw probe error into the error Step returns: timeouts
// become *TimeoutError so callers and reasons need no string matching.
func classify(err error, timeout time.Duration) error {
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) {
		return &TimeoutError{After: timeout, Err: err}
	}
	return err
}

// reason is the short human cause of a failed probe, as reported in a
// Transition and in Stats.LastError.
func reason(err error) string {
	var statusErr *StatusError
	var timeoutErr *TimeoutError
	switch {
	case errors.As(err, &statusErr):
		return statusErr.Error()
	case errors.As(err, &timeoutErr):
		return timeoutErr.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ENOENT):
		return "no socket file" // a Unix socket worker not (or no longer) listening
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	}
	// url.Error repeats the method and URL, which the log already has
	// through the worker key.
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	text := strings.TrimSpace(err.Error())
	if len(text) > maxReasonLen {
		text = text[:maxReasonLen] + "..."
	}
	return text
}
