package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestErrorForMapsEveryKind(t *testing.T) {
	refused := &dialError{err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}
	cases := []struct {
		err  error
		want *Error
	}{
		{ErrNoRoute, ErrNoRoute},
		{ErrQueueFull, ErrQueueFull},
		{fmt.Errorf("wrapped: %w", ErrQueueTimeout), ErrQueueTimeout},
		{refused, ErrBadGateway},
		{&dialError{err: os.ErrDeadlineExceeded}, ErrBadGateway}, // dial timeout: the worker did not accept
		{fasthttp.ErrTimeout, ErrGatewayTimeout},
		{os.ErrDeadlineExceeded, ErrGatewayTimeout},
		{fasthttp.ErrConnectionClosed, ErrBadGateway},
		{errors.New("anything"), ErrBadGateway},
	}
	for _, c := range cases {
		if got := errorFor(c.err); got != c.want {
			t.Errorf("errorFor(%v) = %d, want %d", c.err, got.Status, c.want.Status)
		}
	}
	for _, e := range []*Error{ErrNoRoute, ErrNoBackend, ErrQueueFull, ErrQueueTimeout, ErrBadGateway, ErrGatewayTimeout, ErrBodyTooLarge, ErrHeaderTooLarge, ErrBadRequest, ErrReadTimeout} {
		if e.Body[len(e.Body)-1] != '\n' || fmt.Sprint(e.Status) != e.Body[:3] {
			t.Errorf("body %q does not start with its status %d", e.Body, e.Status)
		}
		if e.Status == 503 && e.RetryAfter == "" {
			t.Errorf("503 %q without Retry-After", e.Body)
		}
	}
}

func TestRetryPolicy(t *testing.T) {
	now := time.Now()
	notSentErr := &dialError{err: errors.New("refused")}
	sentErr := fasthttp.ErrConnectionClosed
	cases := []struct {
		name string
		p    retryPolicy
		err  error
		want bool
	}{
		{"not sent, post", retryPolicy{left: 1}, notSentErr, true},
		{"sent, post", retryPolicy{left: 1, replayable: true}, sentErr, false},
		{"sent, get", retryPolicy{left: 1, idempotent: true, replayable: true}, sentErr, true},
		{"sent, get, streamed body", retryPolicy{left: 1, idempotent: true}, sentErr, false},
		{"timeout, get", retryPolicy{left: 1, idempotent: true, replayable: true}, fasthttp.ErrTimeout, false},
		{"no tries left", retryPolicy{left: 0}, notSentErr, false},
		{"past deadline", retryPolicy{left: 1, deadline: now.Add(-time.Second)}, notSentErr, false},
		{"proxy error", retryPolicy{left: 1, idempotent: true, replayable: true}, ErrQueueFull, false},
	}
	for _, c := range cases {
		p := c.p
		if got := p.again(c.err, now); got != c.want {
			t.Errorf("%s: again = %v, want %v", c.name, got, c.want)
		}
		if c.want && p.left != c.p.left-1 {
			t.Errorf("%s: a retry did not spend a try", c.name)
		}
	}
}

func TestHeaderHelpers(t *testing.T) {
	for _, h := range []string{"connection", "KEEP-ALIVE", "Te", "transfer-encoding", "Proxy-Connection", "upgrade", "trailer"} {
		if !isHopHeader([]byte(h)) {
			t.Errorf("%s not hop-by-hop", h)
		}
	}
	for _, h := range []string{"Content-Type", "X-Te", "Tf", "Upgrade-Insecure-Requests"} {
		if isHopHeader([]byte(h)) {
			t.Errorf("%s taken for hop-by-hop", h)
		}
	}
	var toks []string
	connectionTokens([]byte(" close , X-Foo,,keep-alive "), func(b []byte) { toks = append(toks, string(b)) })
	if fmt.Sprint(toks) != "[close X-Foo keep-alive]" {
		t.Errorf("tokens %q", toks)
	}
	if !hasRawHeader([]byte("Host: x\r\ncontent-LENGTH: 3\r\n"), "content-length") || hasRawHeader([]byte("X-Content-Length: 3\r\n"), "content-length") {
		t.Error("hasRawHeader")
	}
	ids := newRequestIDs()
	a, b := string(ids.appendNext(nil)), string(ids.appendNext(nil))
	if a == b || len(a) < 14 {
		t.Errorf("ids %q %q", a, b)
	}
}
