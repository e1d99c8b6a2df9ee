package main

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report prints the summary and answers whether the soak passed.
func (s *soak) report(out io.Writer) bool {
	ok := true
	fmt.Fprintf(out, "soak: %s of load (%d clients, at most %d req/s) with chaos from %s, corral pid %d, %s, nproc %d\n\n",
		s.loadTime.Round(time.Second), s.o.clients, s.o.rate, s.start.UTC().Format("2006-01-02 15:04 UTC"), s.cmd.Process.Pid, runtime.Version(), runtime.NumCPU())

	// Requests, by what was asked.
	type tally struct{ n, failed int }
	kinds := map[string]*tally{}
	fails := map[string]*[2]int{} // kind -> allowed, unexpected
	s.ch.mu.Lock()
	kills := append([]kill(nil), s.ch.kills...)
	s.ch.mu.Unlock()
	total, failed, unexpected := 0, 0, 0
	var worst []result
	for _, r := range s.ld.results {
		t := kinds[r.kind]
		if t == nil {
			t = &tally{}
			kinds[r.kind] = t
		}
		t.n++
		total++
		if r.fail == "" {
			continue
		}
		t.failed++
		failed++
		f := fails[r.fail]
		if f == nil {
			f = &[2]int{}
			fails[r.fail] = f
		}
		if s.failLog != nil {
			fmt.Fprintf(s.failLog, "%s %s %q took %s pid %d allowed %v\n", r.start.Format("15:04:05.000"), r.kind, r.fail,
				r.end.Sub(r.start).Round(time.Millisecond), r.pid, allowed(r, kills, s.o.killSlack))
		}
		if allowed(r, kills, s.o.killSlack) {
			f[0]++
		} else {
			f[1]++
			unexpected++
			if len(worst) < 10 {
				worst = append(worst, r)
			}
		}
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "requests\tcount\tfailed\t")
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", k, kinds[k].n, kinds[k].failed)
	}
	fmt.Fprintf(tw, "all\t%d\t%d\t\n", total, failed)
	tw.Flush()
	fmt.Fprintln(out)

	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "failures by kind\tcount\tin flight on a killed worker\tunexpected\t")
	for _, k := range slices.Sorted(maps.Keys(fails)) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", k, fails[k][0]+fails[k][1], fails[k][0], fails[k][1])
	}
	fmt.Fprintf(tw, "all\t%d\t%d\t%d\t\n", failed, failed-unexpected, unexpected)
	tw.Flush()
	fmt.Fprintf(out, "(in flight on a killed worker: a 502 for a POST, or a response or tunnel cut after the head came from the killed pid or before\n"+
		" any head came, for a request in flight at the kill or started within %s after it; anything else is unexpected)\n", s.o.killSlack)
	if unexpected > 0 {
		ok = false
		for _, r := range worst {
			fmt.Fprintf(out, "  unexpected: %s %s at %s (took %s, pid %d)\n", r.kind, r.fail, r.start.Format("15:04:05.000"), r.end.Sub(r.start).Round(time.Millisecond), r.pid)
		}
	}
	fmt.Fprintln(out)

	// Chaos.
	s.ch.mu.Lock()
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "chaos step\ttimes\t")
	for _, k := range slices.Sorted(maps.Keys(s.ch.done)) {
		fmt.Fprintf(tw, "%s\t%d\t\n", k, s.ch.done[k])
	}
	tw.Flush()
	byApp := map[string]int{}
	for _, k := range kills {
		byApp[k.app]++
	}
	fmt.Fprintf(out, "kills sent: %d (web %d, sock %d, bg %d); freezes that took the worker out of rotation within %s: %d\n",
		len(kills), byApp["web"], byApp["sock"], byApp["bg"], s.ch.freeze, s.ch.left)
	if len(s.ch.problems) > 0 {
		ok = false
		fmt.Fprintf(out, "chaos steps that did not reach their state: %d\n", len(s.ch.problems))
		for _, p := range s.ch.problems[:min(10, len(s.ch.problems))] {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
	s.ch.mu.Unlock()
	fmt.Fprintln(out)

	// Restarts by cause, from corral_worker_replacements_total.
	by := s.smp.replacementsByCause()
	var parts []string
	for _, c := range []string{"crash", "health", "manual", "reload", "recycle"} {
		parts = append(parts, fmt.Sprintf("%s %.0f", c, by[c]))
	}
	fmt.Fprintf(out, "restarts by cause (corral_worker_replacements_total, whole run): %s\n", strings.Join(parts, ", "))
	// Every crash is a kill the chaos sent, and a freeze is too short for a
	// health restart (restart_after is 60 s).
	if int(by["crash"]) != len(kills) || by["health"] != 0 {
		ok = false
		fmt.Fprintf(out, "restarts: FAIL: crash %.0f, health %.0f; want crash = kills sent (%d), health 0\n", by["crash"], by["health"], len(kills))
	} else {
		fmt.Fprintf(out, "restarts: ok (crash = kills sent, health 0)\n")
	}
	fmt.Fprintln(out)

	// Leaks.
	mib := func(kib int) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }
	gOK := s.after.goroutines <= s.base.goroutines+s.o.tolG
	fOK := s.after.fds <= s.base.fds+s.o.tolFD
	rssLimit := int(float64(s.rssFirst)*s.o.rssGrowth) + s.o.rssSlack*1024
	rOK := s.rssLast <= rssLimit
	verdict := func(b bool) string {
		if b {
			return "ok"
		}
		ok = false
		return "LEAK"
	}
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "corral process\tbaseline\tpeak\tafter\tcheck\t")
	fmt.Fprintf(tw, "goroutines\t%d\t%d\t%d\tafter <= baseline + %d: %s\t\n", s.base.goroutines, s.peak.goroutines, s.after.goroutines, s.o.tolG, verdict(gOK))
	fmt.Fprintf(tw, "open fds\t%d\t%d\t%d\tafter <= baseline + %d: %s\t\n", s.base.fds, s.peak.fds, s.after.fds, s.o.tolFD, verdict(fOK))
	fmt.Fprintf(tw, "RSS MiB\t%s\t%s\t%s\tsecond-half peak %s <= %.2f x first-half peak %s + %d: %s\t\n",
		mib(s.base.rss), mib(s.peak.rss), mib(s.after.rss), mib(s.rssLast), s.o.rssGrowth, mib(s.rssFirst), s.o.rssSlack, verdict(rOK))
	tw.Flush()
	fmt.Fprintf(out, "(baseline: median of 3 samples a second apart, taken %s after the %s warm-up's connections closed;\n", idleWait, s.o.warmup)
	if s.back {
		fmt.Fprintf(out, " after: the same, once the load stopped and every app was back to its instances: within the tolerances %s after)\n",
			s.backAfter.Round(time.Second))
	} else {
		fmt.Fprintf(out, " after: the last sample, %s after the load stopped: never back within the tolerances)\n", s.o.settle)
	}
	fmt.Fprintln(out)
	if ok {
		fmt.Fprintln(out, "soak: PASS")
	} else {
		fmt.Fprintln(out, "soak: FAIL")
	}
	return ok
}
