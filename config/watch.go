package config

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// Watcher notices when the config file changes on disk, however it was
// replaced: written in place, renamed over by an editor, or swapped in by a
// Kubernetes ConfigMap update (a symlink chain whose target directory moves).
//
// It watches directories, not the file, because a rename or symlink swap
// replaces the file a file watch is attached to. Events only say "look
// again"; whether the config changed is decided by a fingerprint of the
// file's resolved path and content, so a touch or a rewrite with the same
// bytes is not a change.
type Watcher struct {
	path     string
	log      hclog.Logger
	debounce time.Duration
	poll     time.Duration

	mu   sync.Mutex
	last fingerprint // of the last observation; guarded by mu

	// afterCheck, when set by a test before Run, sees the outcome of every
	// check Run makes.
	afterCheck func(changed bool)
}

// fingerprint identifies the content the config path leads to.
type fingerprint struct {
	resolved string
	sum      [sha256.Size]byte
}

// NewWatcher returns a watcher of the file at path that fires once events
// have been quiet for debounce and also compares the file every poll (a
// safety net for changes no event reports; 0 disables polling). Create it
// before loading the file so that a change in between is not missed.
func NewWatcher(path string, log hclog.Logger, debounce, poll time.Duration) *Watcher {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	w := &Watcher{path: path, log: log, debounce: debounce, poll: poll}
	// A file missing now leaves the zero fingerprint, so its appearance is a change.
	w.last, _ = w.fingerprint()
	return w
}

func (w *Watcher) fingerprint() (fingerprint, error) {
	resolved, err := filepath.EvalSymlinks(w.path)
	if err != nil {
		return fingerprint{}, err
	}
	src, err := os.ReadFile(resolved)
	if err != nil {
		return fingerprint{}, err
	}
	return fingerprint{resolved: resolved, sum: sha256.Sum256(src)}, nil
}

// Check reports whether the file's content or resolved path changed since
// the last observation (NewWatcher, Check or Run), and records the new state.
// A file that cannot be read, such as one vanished in the middle of a swap,
// is not a change: the next check after it reappears decides.
func (w *Watcher) Check() bool {
	fp, err := w.fingerprint()
	if err != nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if fp == w.last {
		return false
	}
	w.last = fp
	return true
}

// Run watches until ctx is done, calling changed (from Run's goroutine) once
// per settled change. It checks once at start, so a change made between
// NewWatcher and Run is reported too.
func (w *Watcher) Run(ctx context.Context, changed func()) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	watched := map[string]bool{}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.log.Warn("cannot watch config directory, polling only", "path", w.path, "error", err)
	} else {
		defer fsw.Close()
		events, errs = fsw.Events, fsw.Errors
		if err := w.watchDirs(fsw, watched); err != nil {
			w.log.Warn("cannot watch config directory, polling only", "path", w.path, "error", err)
		}
	}

	var tick <-chan time.Time
	if w.poll > 0 {
		ticker := time.NewTicker(w.poll)
		defer ticker.Stop()
		tick = ticker.C
	}
	settle := time.NewTimer(w.debounce)
	settle.Stop()
	defer settle.Stop()
	pending := false // events arrived and have not yet settled

	check := func() {
		c := w.Check()
		if fsw != nil {
			// The file may now resolve into another directory.
			if err := w.watchDirs(fsw, watched); err != nil {
				w.log.Debug("cannot watch config directory", "error", err)
			}
		}
		if w.afterCheck != nil {
			w.afterCheck(c)
		}
		if c {
			w.log.Debug("config file changed", "path", w.path)
			changed()
		}
	}

	check()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			pending = true
			settle.Reset(w.debounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.log.Warn("config watch error", "error", err)
		case <-settle.C:
			pending = false
			check()
		case <-tick:
			// While events are still arriving the file may be half written;
			// the settle timer will look at it once they stop.
			if !pending {
				check()
			}
		}
	}
}

// watchDirs makes fsw watch the directory holding the config path and the
// one holding the file it resolves to, and nothing else.
func (w *Watcher) watchDirs(fsw *fsnotify.Watcher, watched map[string]bool) error {
	want := map[string]bool{filepath.Dir(w.path): true}
	if resolved, err := filepath.EvalSymlinks(w.path); err == nil {
		want[filepath.Dir(resolved)] = true
	}
	for dir := range watched {
		if !want[dir] {
			// The directory may be gone already (an old ConfigMap version).
			_ = fsw.Remove(dir)
			delete(watched, dir)
		}
	}
	var firstErr error
	for dir := range want {
		if watched[dir] {
			continue
		}
		if err := fsw.Add(dir); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		watched[dir] = true
	}
	return firstErr
}
