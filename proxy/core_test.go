package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/corral-dev/corral/config"
)

func TestStatusForMapsEveryKind(t *testing.T) {
	refused := &dialError{err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}}
	cases := []struct {
		err  error
		who  blame
		body reqBody
		want *Error
	}{
		{ErrNoRoute, blameCorral, reqBody{}, ErrNoRoute},
		{fmt.Errorf("wrapped: %w", ErrQueueTimeout), blameCorral, reqBody{}, ErrQueueTimeout},
		{refused, blameWorker, reqBody{}, ErrBadGateway},
		{&dialError{err: os.ErrDeadlineExceeded}, blameWorker, reqBody{}, ErrBadGateway}, // dial timeout: the worker did not accept
		{fasthttp.ErrTimeout, blameWorker, reqBody{}, ErrGatewayTimeout},
		{os.ErrDeadlineExceeded, blameWorker, reqBody{}, ErrGatewayTimeout},
		{fasthttp.ErrConnectionClosed, blameWorker, reqBody{}, ErrBadGateway},
		{errors.New("anything"), blameWorker, reqBody{}, ErrBadGateway},
		{errors.New("anything"), blameClient, reqBody{clientErr: io.ErrUnexpectedEOF}, ErrClientGone},
		{errors.New("anything"), blameClient, reqBody{clientErr: os.ErrDeadlineExceeded}, ErrReadTimeout},
		{errors.New("anything"), blameClient, reqBody{clientErr: ErrBodyTooLarge}, ErrBodyTooLarge},
		{errors.New("anything"), blameClient, reqBody{clientErr: errors.New("invalid chunk size")}, ErrBadRequest},
		{errors.New("anything"), blameClient, reqBody{clientErr: &net.OpError{Op: "read", Err: syscall.ECONNRESET}}, ErrClientGone},
		{context.Canceled, blameClient, reqBody{}, ErrClientGone},
	}
	for _, c := range cases {
		if got := statusFor(c.err, c.who, &c.body); got != c.want {
			t.Errorf("statusFor(%v, %d, %v) = %d, want %d", c.err, c.who, c.body.clientErr, got.Status, c.want.Status)
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

func TestBlameFor(t *testing.T) {
	if blameFor(errors.New("reset"), &reqBody{clientErr: io.ErrUnexpectedEOF}, false) != blameClient {
		t.Error("a short client body is the worker's")
	}
	if blameFor(errors.New("reset"), &reqBody{}, true) != blameClient {
		t.Error("a client that left is the worker's")
	}
	if blameFor(ErrQueueFull, &reqBody{}, false) != blameCorral {
		t.Error("own error not corral's")
	}
	if blameFor(fasthttp.ErrTimeout, &reqBody{}, false) != blameWorker {
		t.Error("timeout not the worker's")
	}
}

func TestMayRetry(t *testing.T) {
	now := time.Now()
	notSentErr := &dialError{err: errors.New("refused")}
	sentErr := fasthttp.ErrConnectionClosed
	held := reqBody{held: true, buf: []byte("x"), declared: 1}
	streamedUntouched := reqBody{src: strings.NewReader("x"), declared: 1 << 20}
	streamedTouched := reqBody{src: strings.NewReader("x"), declared: 1 << 20, read: 4096}
	cases := []struct {
		name string
		p    retryPolicy
		body reqBody
		err  error
		want bool
	}{
		{"not sent, post", retryPolicy{left: 1}, held, notSentErr, true},
		{"not sent, streamed body untouched", retryPolicy{left: 1}, streamedUntouched, notSentErr, true},
		{"not sent, streamed body touched", retryPolicy{left: 1, idempotent: true}, streamedTouched, notSentErr, false},
		{"sent, post", retryPolicy{left: 1}, held, sentErr, false},
		{"sent, get", retryPolicy{left: 1, idempotent: true}, reqBody{}, sentErr, true},
		{"sent, put, held body", retryPolicy{left: 1, idempotent: true}, held, sentErr, true},
		{"sent, put, streamed body", retryPolicy{left: 1, idempotent: true}, streamedTouched, sentErr, false},
		{"timeout, get", retryPolicy{left: 1, idempotent: true}, reqBody{}, fasthttp.ErrTimeout, false},
		{"no tries left", retryPolicy{left: 0}, reqBody{}, notSentErr, false},
		{"past deadline", retryPolicy{left: 1, deadline: now.Add(-time.Second)}, reqBody{}, notSentErr, false},
		{"proxy error", retryPolicy{left: 1, idempotent: true}, reqBody{}, ErrQueueFull, false},
	}
	for _, c := range cases {
		p := c.p
		if got := p.mayRetry(c.err, &c.body, now); got != c.want {
			t.Errorf("%s: mayRetry = %v, want %v", c.name, got, c.want)
		}
		if c.want && p.left != c.p.left-1 {
			t.Errorf("%s: a retry did not spend a try", c.name)
		}
	}
}

// TestReqBodyNeverEndsShort pins the rule the engines rely on: a body that
// the client ends before its Content-Length reads as an error, never as a
// clean end (fasthttp's request stream returns a plain io.EOF there).
func TestReqBodyNeverEndsShort(t *testing.T) {
	b := &reqBody{src: strings.NewReader("12345"), declared: 10}
	got, err := io.ReadAll(b)
	if err != io.ErrUnexpectedEOF || string(got) != "12345" || b.clientErr == nil {
		t.Fatalf("read %q, %v", got, err)
	}
	b = &reqBody{src: strings.NewReader("12345"), declared: 5}
	if got, err := io.ReadAll(b); err != nil || string(got) != "12345" || b.clientErr != nil {
		t.Fatalf("whole body: %q, %v", got, err)
	}
	b = &reqBody{src: strings.NewReader("123456"), declared: -1, limit: 5}
	if _, err := io.ReadAll(b); err != ErrBodyTooLarge {
		t.Fatalf("over limit: %v", err)
	}
	b = &reqBody{src: strings.NewReader("123"), declared: 5}
	if b.hold(nil) || b.clientErr != io.ErrUnexpectedEOF {
		t.Fatalf("hold of a short body: %v", b.clientErr)
	}
}

func TestHeaderHelpers(t *testing.T) {
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

// TestBufferResponseRule pins which responses are read ahead of the client.
func TestBufferResponseRule(t *testing.T) {
	on := &config.Buffering{ResponseMemory: 1 << 20, ResponseDisk: 1 << 30, Chunked: true}
	noChunked := &config.Buffering{ResponseMemory: 1 << 20, ResponseDisk: 1 << 30}
	off := &config.Buffering{}
	cases := []struct {
		name string
		b    *config.Buffering
		hdr  http.Header
		size int64
		want bool
	}{
		{"large, known length", on, http.Header{"Content-Type": {"text/html"}}, 1 << 20, true},
		{"unknown length", on, nil, -1, true},
		{"unknown length, chunked off", noChunked, nil, -1, false},
		{"unknown length, chunked off, app says yes", noChunked, http.Header{"X-Accel-Buffering": {"yes"}}, -1, true},
		{"app says no", on, http.Header{"X-Accel-Buffering": {"No"}}, 1 << 20, false},
		{"event stream", on, http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, -1, false},
		{"event stream the app wants buffered", on, http.Header{"Content-Type": {"text/event-stream"}, "X-Accel-Buffering": {"yes"}}, -1, true},
		{"small body", on, nil, smallBodyLimit, false},
		{"just past small", on, nil, smallBodyLimit + 1, true},
		{"empty", on, nil, 0, false},
		{"buffering off", off, nil, 1 << 20, false},
	}
	for _, tc := range cases {
		if got := bufferResponse(tc.b, &stdHeaders{h: tc.hdr}, tc.size); got != tc.want {
			t.Errorf("%s: bufferResponse = %v, want %v", tc.name, got, tc.want)
		}
	}
}
