package pool

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/go-hclog"
)

// defaultWatchDebounce collects the burst of events one save or build makes.
const defaultWatchDebounce = 300 * time.Millisecond

// skipDirs are never watched: they change all the time and never need a restart.
var skipDirs = map[string]bool{".git": true, "node_modules": true}

// startWatcher (re)starts the dev-mode watcher for the current spec.
func (a *App) startWatcher() {
	if a.stopWatch != nil {
		a.stopWatch()
		a.stopWatch = nil
	}
	if len(a.spec.Watch) == 0 || a.stopping {
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		a.log.Error("cannot watch files", "error", err)
		return
	}
	log := a.log.Named("watch")
	for _, p := range a.spec.Watch {
		addTree(w, p, log)
	}
	debounce := orDefault(a.spec.WatchDebounce, defaultWatchDebounce)
	ctx, cancel := context.WithCancel(a.ctx)
	a.stopWatch = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer w.Close()
		watchLoop(ctx, w, debounce, log, func() {
			a.post(func() { a.startRoll("files changed", CauseReload) })
		})
	}()
	log.Info("watching files", "paths", a.spec.Watch)
}

// watchLoop calls changed once per burst of events (quiet for debounce)
// until ctx is done. New directories are watched as they appear.
func watchLoop(ctx context.Context, w *fsnotify.Watcher, debounce time.Duration, log hclog.Logger, changed func()) {
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if skipped(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					addTree(w, ev.Name, log)
				}
			}
			log.Debug("file changed", "path", ev.Name, "op", ev.Op.String())
			quiet.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			log.Warn("watch error", "error", err)
		case <-quiet.C:
			changed()
		}
	}
}

// addTree watches root and, when it is a directory, every directory below it.
func addTree(w *fsnotify.Watcher, root string, log hclog.Logger) {
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished or unreadable: not worth failing the rest
		}
		if !d.IsDir() {
			if path == root {
				return w.Add(path)
			}
			return nil
		}
		if path != root && skipDirs[d.Name()] {
			return filepath.SkipDir
		}
		return w.Add(path)
	})
	if err != nil {
		log.Warn("cannot watch path", "path", root, "error", err)
	}
}

// skipped reports whether path lies in a directory that is never watched.
func skipped(path string) bool {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if skipDirs[filepath.Base(dir)] {
			return true
		}
		if next := filepath.Dir(dir); next == dir {
			return skipDirs[filepath.Base(path)]
		}
	}
}
