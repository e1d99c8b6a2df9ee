package config

import (
	"testing"
	"time"
)

// BenchmarkLoadFull measures a reload's parse, decode, default and validate
// of the documented example that sets every key.
func BenchmarkLoadFull(b *testing.B) {
	for b.Loop() {
		if _, err := Load("testdata/full.hcl"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompare measures diffing two loaded configs that differ in one app.
func BenchmarkCompare(b *testing.B) {
	old, err := Load("testdata/full.hcl")
	if err != nil {
		b.Fatal(err)
	}
	new, err := Load("testdata/full.hcl")
	if err != nil {
		b.Fatal(err)
	}
	new.Apps[0].Health.Interval = time.Minute
	for b.Loop() {
		if d := Compare(old, new); len(d.Changed) != 1 {
			b.Fatalf("diff = %v", d)
		}
	}
}

// BenchmarkWatcherCheck measures one fingerprint comparison, the cost of each poll.
func BenchmarkWatcherCheck(b *testing.B) {
	w := NewWatcher("testdata/full.hcl", nil, time.Second, 0)
	for b.Loop() {
		if w.Check() {
			b.Fatal("unchanged file reported as changed")
		}
	}
}
