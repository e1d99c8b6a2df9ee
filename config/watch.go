package config

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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

	mu      sync.Mutex
	last    fingerprint // of the last observation; guarded by mu
	also    []string    // other watched files (AlsoWatch); guarded by mu
	readErr string      // the read error last logged, "" when readable; guarded by mu

	// afterCheck, when set by a test before Run, sees the outcome of every
	// check Run makes.
	afterCheck func(changed bool)
}

// fingerprint identifies the content the config path leads to, and that
// of the other watched files.
type fingerprint struct {
	resolved string
	sum      [sha256.Size]byte
	also     [sha256.Size]byte
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
	w.last, _ = w.fingerprint(nil)
	return w
}

// AlsoWatch makes the watcher report changes of these files too (a TLS
// certificate and key, renewed in place or by a symlink swap), replacing
// the set of an earlier call. Their content at the time of the call is the
// baseline, so calling it is not a change. Safe to call while Run runs.
func (w *Watcher) AlsoWatch(paths ...string) {
	abs := make([]string, 0, len(paths))
	for _, p := range paths {
		if a, err := filepath.Abs(p); err == nil {
			p = a
		}
		abs = append(abs, p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if slices.Equal(abs, w.also) {
		return
	}
	w.also = abs
	w.last.also = alsoSum(abs)
}

func (w *Watcher) fingerprint(also []string) (fingerprint, error) {
	resolved, err := filepath.EvalSymlinks(w.path)
	if err != nil {
		return fingerprint{}, err
	}
	src, err := os.ReadFile(resolved)
	if err != nil {
		return fingerprint{}, err
	}
	return fingerprint{resolved: resolved, sum: sha256.Sum256(src), also: alsoSum(also)}, nil
}

// alsoSum hashes the resolved paths and contents of the other watched
// files. One that cannot be read counts by its error, so the config file's
// changes are still seen, and its return is a change.
func alsoSum(paths []string) [sha256.Size]byte {
	if len(paths) == 0 {
		return [sha256.Size]byte{}
	}
	h := sha256.New()
	for _, p := range paths {
		resolved, err := filepath.EvalSymlinks(p)
		var src []byte
		if err == nil {
			src, err = os.ReadFile(resolved)
		}
		if err != nil {
			fmt.Fprintf(h, "%s\x00error\x00", p)
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", resolved, len(src))
		h.Write(src)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// watchedFiles returns the config path and the other watched files.
func (w *Watcher) watchedFiles() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string{w.path}, w.also...)
}

// Check reports whether the file's content or resolved path (or one of the
// other watched files) changed since the last observation (NewWatcher,
// AlsoWatch, Check or Run), and records the new state. A config file that
// cannot be read is not a change: the running config stays, and the next
// check after it is readable again decides. That is logged once, as a
// warning, a missing file too: Run checks once events have settled, and
// editors' and Kubernetes' swaps are atomic renames, so a file missing
// then was deleted.
func (w *Watcher) Check() bool {
	w.mu.Lock()
	also := w.also
	w.mu.Unlock()
	fp, err := w.fingerprint(also)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if msg := err.Error(); msg != w.readErr {
			w.readErr = msg
			w.log.Warn("cannot read config file; keeping the running config", "path", w.path, "error", err)
		}
		return false
	}
	if w.readErr != "" {
		w.readErr = ""
		w.log.Info("config file readable again", "path", w.path)
	}
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
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		w.log.Warn("cannot watch config directory, polling only", "path", w.path, "error", err)
	} else {
		defer fsw.Close()
		events, errs = fsw.Events, fsw.Errors
		if err := w.watchDirs(fsw); err != nil {
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
		if fsw != nil {
			// First, so that a write into a directory watched from now on
			// is either seen by this check or reported by an event: the
			// file may resolve into another directory, or its directory
			// may have been deleted and made again.
			if err := w.watchDirs(fsw); err != nil {
				w.log.Debug("cannot watch config directory", "error", err)
			}
		}
		c := w.Check()
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

// watchDirs makes fsw watch the directories holding the watched paths and
// the files they resolve to, and nothing else. A directory that does not
// exist (deleted, perhaps to be made again) is replaced by its nearest
// existing ancestor, whose events tell when it is back. fsnotify drops the
// watch of a deleted or moved directory itself, so its own list of watches
// is the truth about what is watched.
func (w *Watcher) watchDirs(fsw *fsnotify.Watcher) error {
	want := map[string]bool{}
	for _, p := range w.watchedFiles() {
		want[existingDir(filepath.Dir(p))] = true
		if resolved, err := filepath.EvalSymlinks(p); err == nil {
			want[filepath.Dir(resolved)] = true
		}
	}
	have := map[string]bool{}
	for _, dir := range fsw.WatchList() {
		if !want[dir] {
			_ = fsw.Remove(dir) // it may be gone already (an old ConfigMap version)
			continue
		}
		have[dir] = true
	}
	var firstErr error
	for dir := range want {
		if have[dir] {
			continue
		}
		if err := fsw.Add(dir); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// existingDir returns dir, or its nearest ancestor that exists.
func existingDir(dir string) string {
	for {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}
