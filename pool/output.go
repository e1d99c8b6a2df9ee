package pool

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/corral-dev/corral/config"
)

// Bounds on a worker's output as corral logs it (the rate is the app's
// output block). The pipes are always read at once, whatever the bounds:
// a worker never blocks on a full pipe because its lines are over them,
// and what is over them is discarded as it is read, never held.
const (
	// maxLogLine is the longest line a worker's output is logged as; the
	// rest of a longer line is read and discarded.
	maxLogLine = 16 << 10
	// dropReportEvery is how often a worker whose lines are dropped gets
	// one log line saying how many.
	dropReportEvery = 5 * time.Second
)

// Why a line of worker output was not logged whole, as the reason label
// of corral_worker_log_lines_dropped_total.
const (
	// DropRate: the line was not logged, the worker was over its rate.
	DropRate = "rate"
	// DropTruncated: the line was logged cut at its first maxLogLine bytes.
	DropTruncated = "truncated"
)

// LogDropReasons lists every drop reason, in WorkerStats' order.
var LogDropReasons = [...]string{DropRate, DropTruncated}

// outputLimit is the rate bound that one worker process's stdout and
// stderr share (a token bucket), and the count of what it dropped.
type outputLimit struct {
	stats       *WorkerStats
	log         hclog.Logger // where the drop summaries go; set before the readers start
	reportEvery time.Duration

	mu          sync.Mutex
	rate, burst float64 // rate 0: no bound
	tokens      float64
	last        time.Time
	pending     [len(LogDropReasons)]uint64 // since the last summary
	timer       *time.Timer                 // set while a summary is due
}

// newOutputLimit returns a full bucket of bounds o.
func newOutputLimit(stats *WorkerStats, o config.Output) *outputLimit {
	l := &outputLimit{stats: stats, reportEvery: dropReportEvery, last: time.Now()}
	l.setBounds(o)
	l.tokens = l.burst
	return l
}

// setBounds applies new bounds at once (a reload); the bucket keeps what
// it holds, up to the new burst.
func (l *outputLimit) setBounds(o config.Output) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate, l.burst = float64(o.LinesPerSecond), float64(o.Burst)
	l.tokens = min(l.tokens, l.burst)
}

// take reports whether one more line may be logged now, and counts it
// dropped when not.
func (l *outputLimit) take() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.starvedLocked() {
		l.countLocked(0, 1)
		return false
	}
	if l.rate > 0 {
		l.tokens--
	}
	return true
}

// starved reports whether no line may be logged now (and so every line
// read now is dropped).
func (l *outputLimit) starved() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.starvedLocked()
}

func (l *outputLimit) starvedLocked() bool {
	if l.rate == 0 {
		return false
	}
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	return l.tokens < 1
}

// drop counts n lines dropped over the rate.
func (l *outputLimit) drop(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.countLocked(0, uint64(n))
}

// truncated counts a line that was logged cut.
func (l *outputLimit) truncated() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.countLocked(1, 1)
}

func (l *outputLimit) countLocked(reason int, n uint64) {
	l.stats.addLogDropped(reason, n)
	l.pending[reason] += n
	if l.timer == nil {
		l.timer = time.AfterFunc(l.reportEvery, l.report)
	}
}

// report logs what was dropped since the last summary, if anything. It
// logs under the lock so that once flush returns, no summary of this
// process is still being written.
func (l *outputLimit) report() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.timer = nil
	rate, cut := l.pending[0], l.pending[1]
	l.pending = [len(LogDropReasons)]uint64{}
	if rate > 0 || cut > 0 {
		l.log.Warn("worker output over its bounds", "dropped_lines", rate, "truncated_lines", cut,
			"max_line_bytes", maxLogLine, "lines_per_second", l.rate, "burst", l.burst)
	}
}

// flush reports what is pending now, at the end of the output.
func (l *outputLimit) flush() {
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
	}
	l.mu.Unlock()
	l.report()
}

// copyLines logs every line of r within lim's bounds: a line longer than
// maxLogLine is logged cut (with truncated=true) and the rest of it is
// read and thrown away; a line over the rate is read and thrown away.
// Worker output is the app's own log, so corral's verbosity must not drop
// it: a line is written at info, or at the logger's level when that is
// higher (only "off" silences it).
func copyLines(r io.Reader, log hclog.Logger, lim *outputLimit) {
	br := bufio.NewReaderSize(r, maxLogLine)
	for {
		// A flood past the rate: drop the whole lines read so far at
		// once, counted, instead of one by one. Asked again once data is
		// there: the wait for it may have outlasted the starving.
		if lim.starved() {
			if _, err := br.Peek(1); err == nil && lim.starved() {
				if n := dropWholeLines(br); n > 0 {
					lim.drop(n)
					continue
				}
			}
		}
		line, err := br.ReadSlice('\n')
		long := errors.Is(err, bufio.ErrBufferFull)
		if !long {
			line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		}
		level := max(hclog.Info, log.GetLevel())
		if len(line) > 0 && level != hclog.Off && lim.take() {
			if long {
				lim.truncated()
				log.Log(level, string(cutRunes(line)), "truncated", true)
			} else {
				log.Log(level, string(line))
			}
		}
		for errors.Is(err, bufio.ErrBufferFull) {
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return
		}
	}
}

// dropWholeLines discards the whole lines br holds and returns how many
// (empty ones included); a line not yet ended stays.
func dropWholeLines(br *bufio.Reader) int {
	b, _ := br.Peek(br.Buffered())
	end := bytes.LastIndexByte(b, '\n') + 1
	n := bytes.Count(b[:end], []byte("\n"))
	_, _ = br.Discard(end)
	return n
}

// cutRunes drops a UTF-8 sequence that the cut at maxLogLine split.
func cutRunes(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			break
		}
	}
	return b
}
