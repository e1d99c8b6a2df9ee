package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// gate is an output that blocks every Write until it is opened.
type gate struct {
	open chan struct{}
	lockedBuffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.lockedBuffer.Write(p)
}

// TestLogOutputNeverBlocks: with the output blocked, logging 3 MiB of
// lines returns at once; once it opens, every line that reaches it is
// whole (hclog writes a line per Write: pinned here), the ones kept come
// in order, and the notice counts exactly the ones dropped.
func TestLogOutputNeverBlocks(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	var notices []int
	out := newLogOutput(g, func(n int) { notices = append(notices, n); fmt.Fprintf(g, "dropped %d\n", n) })
	log := hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Info})
	const lines = 3000
	filler := strings.Repeat("f", 1000)
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		for i := range lines {
			log.Info("line", "n", i, "filler", filler)
		}
	}()
	select {
	case <-logged:
		close(g.open)
	case <-time.After(5 * time.Second):
		close(g.open)
		<-logged
		t.Fatal("logging blocked on the blocked output")
	}
	out.Close(5 * time.Second)

	kept, last := 0, -1
	for _, l := range strings.Split(strings.TrimSuffix(g.String(), "\n"), "\n") {
		var n int
		if _, err := fmt.Sscanf(l, "dropped %d", &n); err == nil {
			continue
		}
		i := strings.Index(l, "line: n=")
		if i < 0 || !strings.HasSuffix(l, "filler="+filler) {
			t.Fatalf("a line reached the output broken: %.80q", l)
		}
		fmt.Sscanf(l[i+len("line: n="):], "%d", &n)
		if n <= last {
			t.Fatalf("line %d after line %d", n, last)
		}
		last = n
		kept++
	}
	dropped := 0
	for _, n := range notices {
		dropped += n
	}
	t.Logf("%d lines kept, %d dropped, notices %v", kept, dropped, notices)
	if kept+dropped != lines || dropped == 0 || kept*1000 > 2*logBuffer {
		t.Errorf("%d kept + %d dropped, want %d in all, some dropped, at most about %d bytes kept", kept, dropped, lines, logBuffer)
	}
}
