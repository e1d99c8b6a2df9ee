package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/corral-dev/corral/pool"
)

// HTTPError is an unexpected answer from the admin API.
type HTTPError struct {
	Code int
	Body string // the first line of the body, trimmed
}

func (e *HTTPError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("admin api answered %d", e.Code)
	}
	return fmt.Sprintf("admin api answered %d: %s", e.Code, e.Body)
}

// maxClientBody bounds what the CLI reads from an admin answer.
const maxClientBody = 16 << 20

// baseURL turns an admin address into a URL prefix: "host:port" gets
// http://, and an empty host (":9180") means loopback.
func baseURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/")
	}
	if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	return "http://" + addr
}

// Client calls the admin API of a running corral, as the CLI does.
type Client struct {
	// Addr is the admin address: host:port, or a URL prefix.
	Addr string
	// Token, when set, is sent as "Authorization: Bearer <token>".
	Token string
}

// newRequest builds a request to path with the token set. Each request
// uses its own transport without keep-alive or proxy: the CLI makes one
// call per run, and HTTP_PROXY must not capture loopback.
func (c Client) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, baseURL(c.Addr)+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

func (c Client) do(req *http.Request) (*http.Response, func(), error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		client.CloseIdleConnections()
		return nil, nil, err
	}
	return resp, func() { resp.Body.Close(); client.CloseIdleConnections() }, nil
}

// call does one request against the admin API and returns the status code
// and body.
func (c Client) call(ctx context.Context, method, path string) (int, []byte, error) {
	return c.callBody(ctx, method, path, nil)
}

// callBody is call with a JSON request body (none when body is nil).
func (c Client) callBody(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return 0, nil, err
	}
	resp, done, err := c.do(req)
	if err != nil {
		return 0, nil, err
	}
	defer done()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxClientBody))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, out, nil
}

// httpError describes an answer the caller did not expect: its "error"
// when it is a JSON refusal, else the first line of its body.
func httpError(code int, body []byte) *HTTPError {
	var ref refusal
	if json.Unmarshal(body, &ref) == nil && ref.Error != "" {
		return &HTTPError{Code: code, Body: ref.Error}
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	return &HTTPError{Code: code, Body: line}
}

// Status reads GET /status.
func (c Client) Status(ctx context.Context) (Status, error) {
	var st Status
	body, err := c.RawStatus(ctx)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("decoding status: %w", err)
	}
	return st, nil
}

// RawStatus returns the body of GET /status as the instance sent it.
func (c Client) RawStatus(ctx context.Context) ([]byte, error) {
	code, body, err := c.call(ctx, http.MethodGet, "/status")
	if err != nil {
		return nil, fmt.Errorf("fetching status: %w", err)
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("fetching status: %w", httpError(code, body))
	}
	return body, nil
}

// Reload asks the instance to reload its config now. An
// invalid config (422) or a failed apply (500) comes back as a result with
// Applied=false and a nil error; err is set only when no outcome was read.
func (c Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	code, body, err := c.call(ctx, http.MethodPost, "/reload")
	if err != nil {
		return res, fmt.Errorf("requesting reload: %w", err)
	}
	switch code {
	case http.StatusOK, http.StatusUnprocessableEntity, http.StatusInternalServerError:
		if err := json.Unmarshal(body, &res); err != nil {
			return res, fmt.Errorf("decoding reload result: %w", err)
		}
		return res, nil
	default:
		return res, fmt.Errorf("requesting reload: %w", httpError(code, body))
	}
}

// Scale asks the instance to run app with n workers until
// the next reload. A refusal the API explains (400, 404, 409) comes back as
// a result with Result "failed" and its Error, and a nil error.
func (c Client) Scale(ctx context.Context, app string, n int) (ScaleResult, error) {
	var res ScaleResult
	body, _ := json.Marshal(ScaleRequest{Instances: &n})
	code, out, err := c.callBody(ctx, http.MethodPost, "/apps/"+url.PathEscape(app)+"/scale", body)
	if err != nil {
		return res, fmt.Errorf("requesting scale: %w", err)
	}
	switch code {
	case http.StatusOK, http.StatusBadRequest, http.StatusNotFound, http.StatusConflict:
		if err := json.Unmarshal(out, &res); err != nil {
			return res, fmt.Errorf("decoding scale result: %w", httpError(code, out))
		}
		return res, nil
	default:
		return res, fmt.Errorf("requesting scale: %w", httpError(code, out))
	}
}

// Restart asks the instance for a rolling restart of app
// and waits for its outcome. A refusal the API explains comes back as a
// result with Result "failed" and a nil error.
func (c Client) Restart(ctx context.Context, app string) (RestartResult, error) {
	var res RestartResult
	code, out, err := c.call(ctx, http.MethodPost, "/apps/"+url.PathEscape(app)+"/restart")
	if err != nil {
		return res, fmt.Errorf("requesting restart: %w", err)
	}
	switch code {
	case http.StatusOK, http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable:
		if err := json.Unmarshal(out, &res); err != nil {
			return res, fmt.Errorf("decoding restart result: %w", httpError(code, out))
		}
		return res, nil
	default:
		return res, fmt.Errorf("requesting restart: %w", httpError(code, out))
	}
}

// RestartWorker asks the instance to replace worker id and waits for its
// outcome, as Restart does for an app.
func (c Client) RestartWorker(ctx context.Context, id string) (WorkerRestartResult, error) {
	var res WorkerRestartResult
	code, out, err := c.call(ctx, http.MethodPost, "/workers/"+url.PathEscape(id)+"/restart")
	if err != nil {
		return res, fmt.Errorf("requesting worker restart: %w", err)
	}
	switch code {
	case http.StatusOK, http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable:
		if err := json.Unmarshal(out, &res); err != nil {
			return res, fmt.Errorf("decoding worker restart result: %w", httpError(code, out))
		}
		return res, nil
	default:
		return res, fmt.Errorf("requesting worker restart: %w", httpError(code, out))
	}
}

// Health returns nil when GET /healthz answers 200.
func (c Client) Health(ctx context.Context) error {
	code, body, err := c.call(ctx, http.MethodGet, "/healthz")
	if err != nil {
		return fmt.Errorf("checking health: %w", err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("checking health: %w", httpError(code, body))
	}
	return nil
}

// Logs copies GET /logs to w: the latest lines lines of app (every app and
// corral's own when app is ""), then, with follow, new lines as they come
// until ctx ends (nil is returned then) or corral closes the stream.
func (c Client) Logs(ctx context.Context, w io.Writer, app string, lines int, follow bool) error {
	q := url.Values{"lines": {strconv.Itoa(lines)}}
	if app != "" {
		q.Set("app", app)
	}
	if follow {
		q.Set("follow", "1")
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/logs?"+q.Encode(), nil)
	if err != nil {
		return fmt.Errorf("fetching logs: %w", err)
	}
	resp, done, err := c.do(req)
	if err != nil {
		return fmt.Errorf("fetching logs: %w", err)
	}
	defer done()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("fetching logs: %w", httpError(resp.StatusCode, body))
	}
	if _, err := io.Copy(w, resp.Body); err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading logs: %w", err)
	}
	return nil
}

// WriteStatusTable writes s for humans: a header with version, listen
// address and last reload, then one row per worker.
func WriteStatusTable(w io.Writer, s Status) {
	writeStatusTable(w, s, time.Now())
}

func writeStatusTable(w io.Writer, s Status, now time.Time) {
	head := fmt.Sprintf("corral %s  pid %d  listen %s  config %s", orDash(s.Version), s.PID, orDash(s.Listen), orDash(s.Config))
	if !s.StartedAt.IsZero() {
		head += "  up " + formatAge(now.Sub(s.StartedAt))
	}
	if s.ShuttingDown {
		head += "  SHUTTING DOWN"
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w, "last reload: "+reloadLine(s.LastReload))
	if r := s.LastReload; r != nil {
		for _, p := range r.Problems {
			fmt.Fprintln(w, "  "+p)
		}
	}
	var apps []string
	for _, a := range s.Apps {
		line := fmt.Sprintf("%s %d/%d ready", a.Name, a.Ready, a.Instances)
		if a.Queued > 0 {
			line += fmt.Sprintf(" %d queued", a.Queued)
		}
		if a.Roll.State != "" {
			line += " roll " + a.Roll.State
		}
		if as := a.Autoscale; as != nil {
			line += fmt.Sprintf(" autoscale %d..%d", as.Min, as.Max)
			if l := as.Last; l != nil {
				line += fmt.Sprintf(" (last %s %d->%d %s ago)", l.Direction, l.From, l.To, formatAge(now.Sub(l.At)))
			}
		}
		apps = append(apps, line)
	}
	fmt.Fprintln(w, "apps: "+orDash(strings.Join(apps, ", ")))
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tWORKER\tPID\tPORT\tSTATE\tRESTARTS\tINFLIGHT\tREQUESTS\tUPTIME\tREASON")
	for _, a := range s.Apps {
		if len(a.Workers) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\tno workers\n", a.Name)
		}
		for _, wk := range a.Workers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n",
				a.Name, wk.ID, positive(wk.PID), listenOn(wk), wk.State,
				wk.Restarts, wk.Inflight, wk.Requests, uptime(wk, now), workerReason(wk))
		}
	}
	tw.Flush()
}

func reloadLine(r *ReloadResult) string {
	if r == nil {
		return "none"
	}
	line := r.At.Local().Format(time.DateTime) + " (" + r.Trigger + ") "
	switch {
	case r.Applied && r.Changes != "":
		line += "applied: " + r.Changes
	case r.Applied:
		line += "applied, no change"
	case len(r.Problems) > 0:
		line += fmt.Sprintf("invalid, %d problem(s), old config kept", len(r.Problems))
	default:
		line += "failed: " + r.Error
	}
	return line
}

// workerReason explains a worker's state in one cell: its reason, why it
// was ejected, how its last process ended (in backoff) and its last failed
// probe, without saying the same thing twice.
func workerReason(w pool.WorkerStatus) string {
	var parts []string
	if w.Reason != "" {
		parts = append(parts, w.Reason)
	}
	if w.Ejected {
		parts = append(parts, "ejected: "+orDash(w.EjectReason))
	}
	if w.State == pool.StateBackoff && w.LastExit != "" && !slices.Contains(parts, w.LastExit) {
		parts = append(parts, w.LastExit)
	}
	if h := w.Health; h != nil && h.LastError != "" && !slices.Contains(parts, h.LastError) {
		parts = append(parts, "health: "+h.LastError)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// uptime is how long the worker's process has run; "-" when none runs.
func uptime(w pool.WorkerStatus, now time.Time) string {
	if w.StartedAt.IsZero() || w.PID <= 0 || w.State == pool.StateBackoff {
		return "-"
	}
	return formatAge(now.Sub(w.StartedAt))
}

// formatAge renders d coarsely: "45s", "12m3s", "5h2m", "3d4h".
func formatAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
	}
}

// listenOn is where a worker listens: its port, or its socket's path.
func listenOn(w pool.WorkerStatus) string {
	if w.Socket != "" {
		return w.Socket
	}
	return positive(w.Port)
}

func positive(n int) string {
	if n <= 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
