package pool

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
)

// jsonLines parses what a JSON hclog logger wrote.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func newJSONLog(out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Info, JSONFormat: true})
}

// defaultOutput is the output block's defaults.
var defaultOutput = config.Output{LinesPerSecond: 2000, Burst: 10000}

// newTestLimit is a bucket of bounds o that reports to log.
func newTestLimit(stats *WorkerStats, log hclog.Logger, o config.Output) *outputLimit {
	lim := newOutputLimit(stats, o)
	lim.log = log
	return lim
}

func TestCopyLinesCutsLongLines(t *testing.T) {
	var out syncBuffer
	log := newJSONLog(&out)
	stats := &WorkerStats{}
	lim := newTestLimit(stats, log, defaultOutput)
	long := strings.Repeat("x", maxLogLine-1) + "é" + strings.Repeat("y", 3*maxLogLine) // the cut falls inside é
	copyLines(strings.NewReader("first\r\n"+long+"\nafter\nlast"), log, lim)
	lim.flush()
	lines := jsonLines(t, out.String())
	if len(lines) != 5 {
		t.Fatalf("logged %d lines, want 5 (first, the long one cut, after, last, the summary):\n%s", len(lines), shortLines(lines))
	}
	if lines[0]["@message"] != "first" || lines[2]["@message"] != "after" || lines[3]["@message"] != "last" {
		t.Errorf("short lines logged as %q, %q, %q", lines[0]["@message"], lines[2]["@message"], lines[3]["@message"])
	}
	msg, _ := lines[1]["@message"].(string)
	if msg != strings.Repeat("x", maxLogLine-1) || lines[1]["truncated"] != true {
		t.Errorf("long line logged as %d bytes (%d x, %d y), truncated=%v; want its first %d bytes up to the split rune, truncated=true",
			len(msg), strings.Count(msg, "x"), strings.Count(msg, "y"), lines[1]["truncated"], maxLogLine-1)
	}
	if lines[4]["truncated_lines"] != 1.0 || lines[4]["dropped_lines"] != 0.0 {
		t.Errorf("summary %v, want truncated_lines=1 dropped_lines=0", lines[4])
	}
	if n := stats.LogLinesDropped(DropTruncated); n != 1 {
		t.Errorf("truncated count %d, want 1", n)
	}
}

// shortLines lists the messages of lines, each cut to 40 bytes.
func shortLines(lines []map[string]any) string {
	var b strings.Builder
	for _, l := range lines {
		msg, _ := l["@message"].(string)
		fmt.Fprintf(&b, "%d bytes %.40q truncated=%v\n", len(msg), msg, l["truncated"])
	}
	return b.String()
}

// endless is an output of n bytes without a newline, made as it is read.
type endless struct{ left, read int64 }

func (e *endless) Read(p []byte) (int, error) {
	if e.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), e.left)
	for i := range p[:n] {
		p[i] = 'z'
	}
	e.left -= n
	e.read += n
	return int(n), nil
}

// TestCopyLinesEndlessLineNotHeld reads a 256 MiB line: it is all read
// (the worker never blocks on the pipe), logged once cut, and what
// corral allocates meanwhile stays far below the line's size.
func TestCopyLinesEndlessLineNotHeld(t *testing.T) {
	var out syncBuffer
	log := newJSONLog(&out)
	stats := &WorkerStats{}
	lim := newTestLimit(stats, log, defaultOutput)
	src := &endless{left: 256 << 20}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	copyLines(src, log, lim)
	runtime.ReadMemStats(&after)
	lim.flush()
	if src.read != 256<<20 {
		t.Errorf("read %d bytes of the line, want all %d", src.read, 256<<20)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("allocated %d MiB while reading a 256 MiB line; want < 4 MiB", alloc>>20)
	}
	lines := jsonLines(t, out.String())
	if len(lines) != 2 || lines[0]["truncated"] != true || len(lines[0]["@message"].(string)) != maxLogLine {
		t.Fatalf("want one cut line of %d bytes and the summary, got %d lines", maxLogLine, len(lines))
	}
}

// TestCopyLinesRateBound floods 20000 lines at once through a bucket of
// 100 lines and 50 a second: about 100 are logged, the rest are dropped,
// counted, and summed up in one summary line per interval.
func TestCopyLinesRateBound(t *testing.T) {
	var out syncBuffer
	log := newJSONLog(&out)
	stats := &WorkerStats{}
	lim := newTestLimit(stats, log, config.Output{LinesPerSecond: 50, Burst: 100})
	lim.reportEvery = 50 * time.Millisecond
	flood := strings.Repeat("a line of output\n", 20000)
	start := time.Now()
	copyLines(strings.NewReader(flood), log, lim)
	took := time.Since(start)
	eventually(t, 5*time.Second, "the drop summary", func() bool {
		return strings.Contains(out.String(), "worker output over its bounds")
	})
	lim.flush()
	logged, summaries := 0, 0
	var dropped float64
	for _, l := range jsonLines(t, out.String()) {
		switch l["@message"] {
		case "a line of output":
			logged++
		case "worker output over its bounds":
			summaries++
			dropped += l["dropped_lines"].(float64)
		default:
			t.Errorf("unexpected line %v", l)
		}
	}
	// The refill during the read adds rate lines a second.
	if most := 100 + int(took.Seconds()*50) + 1; logged < 100 || logged > most {
		t.Errorf("logged %d lines, want 100..%d", logged, most)
	}
	if n := stats.LogLinesDropped(DropRate); n != uint64(20000-logged) || dropped != float64(n) {
		t.Errorf("dropped count %d, summaries say %v; want %d", n, dropped, 20000-logged)
	}
	if most := int(took/lim.reportEvery) + 2; summaries < 1 || summaries > most {
		t.Errorf("%d summary lines over %s, want 1..%d (one per interval)", summaries, took, most)
	}
}

// TestWorkerOutputBoundsApplyInPlace: a worker's lines are bounded by the
// app's output block, and a reload's new bounds reach the running worker.
func TestWorkerOutputBoundsApplyInPlace(t *testing.T) {
	var out syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Info})
	spec := testSpec(t, "ok", 1)
	spec.Output = config.Output{LinesPerSecond: 1, Burst: 5}
	a := startApp(t, spec, func(o *Options) { o.Logger = log })
	waitReady(t, a, 1)
	addr := a.Table().Backends[0].Addr
	said := func(msg string) func() int {
		return func() int { return strings.Count(out.String(), "pool: "+msg+" ") }
	}
	getText := func(path string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	_, stats := a.Stats()
	getText("/say?n=100&msg=bounded")
	eventually(t, 5*time.Second, "100 lines read", func() bool {
		return int(stats["web-1"].LogLinesDropped(DropRate))+said("bounded")() >= 100
	})
	// The burst of 5, less the "listening" line, and what 1 line/s adds.
	if n := said("bounded")(); n < 4 || n > 6 {
		t.Errorf("%d of 100 lines logged with a burst of 5 at 1 line/s, want 4..6", n)
	}

	next := *spec
	next.Output = config.Output{LinesPerSecond: 0, Burst: 5}
	a.Update(&next) // returns once the supervisor applied it
	getText("/say?n=100&msg=unbounded")
	eventually(t, 5*time.Second, "all 100 lines logged without a bound", func() bool { return said("unbounded")() == 100 })
}
