package admin

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
)

// Bounds of the log ring: what `corral logs` shows from before it started.
const (
	ringLines       = 1000      // lines kept per app, and for corral's own lines
	ringBytes       = 256 << 10 // bytes kept per app, and for corral's own lines
	ringApps        = 32        // apps with a ring of their own; more share corral's
	maxRingLine     = 2048      // longer lines are cut (worker output is already cut at 16 KiB)
	followBuffer    = 512       // lines a follower may lag behind before lines are dropped for it
	maxFollowers    = 32        // GET /logs?follow=1 at once
	defaultBackFill = 100       // lines sent before following, unless ?lines= says otherwise
)

// LogLine is one line of corral's log as GET /logs sends it.
type LogLine struct {
	Seq  uint64 // order across every app
	App  string // the line's "app" key; "" for corral's own lines
	Text string // formatted like corral's text log, without the newline
}

// LogRing keeps the recent lines of corral's log (its own lines and every
// worker's output, which corral logs line by line) and hands them, and
// the lines that follow, to GET /logs. Each app has its own ring, so a
// chatty app does not push the others' lines out. It is an hclog sink:
// register it on the root InterceptLogger.
type LogRing struct {
	level func() hclog.Level // lines below the log's own level are not kept

	mu        sync.Mutex
	seq       uint64
	rings     map[string]*lineRing // by app; "" = corral's own lines
	followers map[*follower]struct{}
}

// NewLogRing returns an empty ring that keeps lines at level() or above.
func NewLogRing(level func() hclog.Level) *LogRing {
	return &LogRing{level: level, rings: map[string]*lineRing{}, followers: map[*follower]struct{}{}}
}

// lineRing is a bounded queue of lines, oldest first.
type lineRing struct {
	lines []LogLine
	bytes int
}

func (q *lineRing) push(l LogLine) {
	q.lines = append(q.lines, l)
	q.bytes += len(l.Text)
	drop := 0
	for len(q.lines)-drop > ringLines || q.bytes > ringBytes {
		q.bytes -= len(q.lines[drop].Text)
		drop++
	}
	if drop > 0 {
		q.lines = slices.Delete(q.lines, 0, drop)
	}
}

// follower is one GET /logs?follow=1 waiting for new lines.
type follower struct {
	app     string // "" = every line
	lines   chan LogLine
	dropped atomic.Int64 // lines it was too slow for
}

// Accept implements hclog.SinkAdapter. It is called for every message of
// every logger derived from the root, whatever the level, so it filters
// first.
func (r *LogRing) Accept(name string, level hclog.Level, msg string, args ...any) {
	if level < r.level() || level == hclog.Off {
		return
	}
	app := ""
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == "app" {
			app = fmt.Sprint(args[i+1])
		}
	}
	text := formatLine(time.Now(), name, level, msg, args)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	line := LogLine{Seq: r.seq, App: app, Text: text}
	key := app
	if _, ok := r.rings[key]; !ok && key != "" && len(r.rings) > ringApps {
		key = "" // a ring of corral's own lines exists beside ringApps apps'
	}
	q := r.rings[key]
	if q == nil {
		q = &lineRing{}
		r.rings[key] = q
	}
	q.push(line)
	for f := range r.followers {
		if f.app != "" && f.app != app {
			continue
		}
		select {
		case f.lines <- line:
		default:
			f.dropped.Add(1)
		}
	}
}

// recent returns up to n of the latest lines of app ("" = every app and
// corral's own), oldest first, and, when follow is set, a follower that
// gets every line after them. The two are taken under one lock, so no
// line is lost or sent twice in between.
func (r *LogRing) recent(app string, n int, follow bool) ([]LogLine, *follower, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []LogLine
	switch q := r.rings[app]; {
	case app != "" && q != nil:
		out = append(out, q.lines...)
	case app != "":
		// One of the apps past ringApps: its lines are among corral's own.
		if q := r.rings[""]; q != nil {
			for _, l := range q.lines {
				if l.App == app {
					out = append(out, l)
				}
			}
		}
	default:
		for _, q := range r.rings {
			out = append(out, q.lines...)
		}
		slices.SortFunc(out, func(a, b LogLine) int { return compareSeq(a.Seq, b.Seq) })
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	if !follow {
		return out, nil, nil
	}
	if len(r.followers) >= maxFollowers {
		return nil, nil, fmt.Errorf("too many followers (%d)", maxFollowers)
	}
	f := &follower{app: app, lines: make(chan LogLine, followBuffer)}
	r.followers[f] = struct{}{}
	return out, f, nil
}

func (r *LogRing) stopFollowing(f *follower) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.followers, f)
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// formatLine renders a message as corral's text log does:
// "2026-12-01T15:20:00.123Z [INFO]  pool: worker ready: app=web worker=web-1".
func formatLine(now time.Time, name string, level hclog.Level, msg string, args []any) string {
	var b strings.Builder
	b.WriteString(now.Format(hclog.TimeFormat))
	b.WriteString(" ")
	tag := "[" + strings.ToUpper(level.String()) + "]"
	b.WriteString(tag)
	b.WriteString(strings.Repeat(" ", max(1, 8-len(tag))))
	if name != "" {
		b.WriteString(name)
		b.WriteString(": ")
	}
	b.WriteString(msg)
	if len(args) > 0 {
		b.WriteString(":")
	}
	for i := 0; i < len(args); i += 2 {
		b.WriteString(" ")
		if i+1 == len(args) {
			b.WriteString("EXTRA_VALUE_AT_END=" + quoteValue(args[i]))
			break
		}
		b.WriteString(fmt.Sprint(args[i]))
		b.WriteString("=")
		b.WriteString(quoteValue(args[i+1]))
	}
	return cut(b.String(), maxRingLine)
}

func quoteValue(v any) string {
	s := fmt.Sprint(v)
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}

// cut shortens s to at most n bytes without splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// maxBackFill bounds ?lines=.
const maxBackFill = ringLines * (ringApps + 1)

// logs serves GET /logs?app=NAME&lines=N&follow=1: the latest N lines of
// app (every app and corral's own when app is empty) as text, one per
// line, then, with follow, each new line as it is logged until the client
// leaves or the admin API shuts down. A follower that cannot keep up loses
// lines, and is told how many.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) {
	if s.opts.Logs == nil {
		s.refuse(w, http.StatusNotImplemented, "logs not supported")
		return
	}
	q := r.URL.Query()
	app := q.Get("app")
	if app != "" && !s.hasApp(app) {
		s.refuse(w, http.StatusNotFound, "%s: %s", ErrUnknownApp, app)
		return
	}
	n := defaultBackFill
	if v := q.Get("lines"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > maxBackFill {
			s.refuse(w, http.StatusBadRequest, "lines must be a whole number in 0..%d, not %q", maxBackFill, v)
			return
		}
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	lines, f, err := s.opts.Logs.recent(app, n, follow)
	if err != nil {
		s.refuse(w, http.StatusServiceUnavailable, "%v", err)
		return
	}
	if f != nil {
		defer s.opts.Logs.stopFollowing(f)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	var buf []byte
	for _, l := range lines {
		buf = append(append(buf, l.Text...), '\n')
	}
	if _, err := w.Write(buf); err != nil || f == nil {
		return
	}
	flusher, _ := w.(http.Flusher)
	for {
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.work.Done():
			return
		case l := <-f.lines:
			buf = append(buf[:0], l.Text...)
			buf = append(buf, '\n')
			// Whatever else is waiting goes in the same write.
			for more := true; more && len(buf) < 64<<10; {
				select {
				case l := <-f.lines:
					buf = append(append(buf, l.Text...), '\n')
				default:
					more = false
				}
			}
			if d := f.dropped.Swap(0); d > 0 {
				buf = fmt.Appendf(buf, "corral: %d lines dropped: this client read too slowly\n", d)
			}
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}
}
