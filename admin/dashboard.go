package admin

import (
	"bytes"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/corral-dev/corral/pool"
)

//go:embed dashboard.html
var dashboardSource string

// dashboardTemplate renders the first paint of GET /; the page's script then
// redraws it from /status every two seconds.
var dashboardTemplate = template.Must(template.New("dashboard").Funcs(template.FuncMap{
	"stateClass": stateClass,
	"uptime":     func(w pool.WorkerStatus) string { return uptime(w, time.Now()) },
	"reason":     workerReason,
	"positive":   positive,
	"listenOn":   listenOn,
	"reloadLine": reloadLine,
	"latency":    probeLatency,
	"memory":     memory,
}).Parse(dashboardSource))

// memory renders a byte count as the page's script does ("48.2 MiB").
func memory(n int64) string {
	if n <= 0 {
		return "-"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// probeLatency renders the last probe's latency as the page's script does.
func probeLatency(w pool.WorkerStatus) string {
	h := w.Health
	if h == nil || h.LastCheck.IsZero() {
		return "-"
	}
	if h.LastLatencyMillis < 1 {
		return fmt.Sprintf("%.0fµs", h.LastLatencyMillis*1000)
	}
	return fmt.Sprintf("%.1fms", h.LastLatencyMillis)
}

// stateClass maps a worker state to its CSS class; unknown states get a
// neutral class rather than a class name taken from data.
func stateClass(state string) string {
	for _, s := range workerStates {
		if s == state {
			return "state state-" + s
		}
	}
	return "state"
}

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := dashboardTemplate.Execute(&buf, s.snapshot()); err != nil {
		s.log.Error("rendering dashboard failed", "error", err)
		http.Error(w, "rendering dashboard failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// Everything the page needs is inline; nothing may load from elsewhere.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(buf.Bytes())
}
