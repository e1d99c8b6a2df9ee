package config

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// waitTimeout bounds every wait for the watcher; generous because the
// machine is shared, and only reached when a test fails.
const waitTimeout = 10 * time.Second

// runningWatcher is a Watcher running in the background for one test.
type runningWatcher struct {
	*Watcher
	fired   chan struct{} // one value per call of changed
	checked chan bool     // the outcome of every check Run makes
}

// startWatcher runs a watcher of path until the test ends, and waits for its
// first check so that the directories are watched before the test acts.
func startWatcher(t *testing.T, path string, debounce, poll time.Duration) *runningWatcher {
	t.Helper()
	return runWatcher(t, NewWatcher(path, hclog.NewNullLogger(), debounce, poll))
}

// runWatcher runs w until the test ends (see startWatcher).
func runWatcher(t *testing.T, w *Watcher) *runningWatcher {
	t.Helper()
	rw := &runningWatcher{
		Watcher: w,
		fired:   make(chan struct{}, 100),
		checked: make(chan bool, 1000),
	}
	rw.afterCheck = func(changed bool) {
		select {
		case rw.checked <- changed:
		default: // a test that stopped listening does not block the watcher
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rw.Run(ctx, func() { rw.fired <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	rw.waitCheck(t)
	return rw
}

func (rw *runningWatcher) waitCheck(t *testing.T) bool {
	t.Helper()
	select {
	case c := <-rw.checked:
		return c
	case <-time.After(waitTimeout):
		t.Fatal("watcher made no check")
		return false
	}
}

func (rw *runningWatcher) waitFired(t *testing.T) {
	t.Helper()
	select {
	case <-rw.fired:
	case <-time.After(waitTimeout):
		t.Fatal("watcher did not report the change")
	}
}

// drainChecks forgets the outcomes of the checks made so far.
func (rw *runningWatcher) drainChecks() {
	for {
		select {
		case <-rw.checked:
		default:
			return
		}
	}
}

// assertNotFired fails if changed was called and not yet consumed.
func (rw *runningWatcher) assertNotFired(t *testing.T) {
	t.Helper()
	select {
	case <-rw.fired:
		t.Fatal("watcher reported a change that is none")
	default:
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherInPlaceWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.hcl")
	writeFile(t, path, "one")
	rw := startWatcher(t, path, 20*time.Millisecond, 0) // no poll: the event must do it
	writeFile(t, path, "two")                           // truncate + write on the same inode
	rw.waitFired(t)
}

func TestWatcherAtomicRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.hcl")
	writeFile(t, path, "one")
	rw := startWatcher(t, path, 20*time.Millisecond, 0)
	// Twice: a watch on the file itself would survive at most the first
	// save, since the rename replaces the inode it is attached to.
	for _, content := range []string{"two", "three"} {
		tmp := filepath.Join(dir, ".config.hcl.swp")
		writeFile(t, tmp, content)
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		rw.waitFired(t)
	}
}

func TestWatcherConfigMapSymlinkSwap(t *testing.T) {
	// The layout the kubelet makes: config.hcl -> ..data/config.hcl,
	// ..data -> ..<timestamp>; an update writes a new timestamp directory
	// and renames a new symlink over ..data.
	dir := t.TempDir()
	version := func(name, content string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "config.hcl"), content)
	}
	version("..2026_11_27_10_00_00.1", "one")
	mustSymlink(t, "..2026_11_27_10_00_00.1", filepath.Join(dir, "..data"))
	path := filepath.Join(dir, "config.hcl")
	mustSymlink(t, "..data/config.hcl", path)

	rw := startWatcher(t, path, 20*time.Millisecond, 0)
	version("..2026_11_27_10_05_00.2", "two")
	mustSymlink(t, "..2026_11_27_10_05_00.2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..2026_11_27_10_00_00.1")); err != nil {
		t.Fatal(err)
	}
	rw.waitFired(t)

	// The watcher follows the new target: a second swap is noticed too.
	version("..2026_11_27_10_10_00.3", "three")
	mustSymlink(t, "..2026_11_27_10_10_00.3", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	rw.waitFired(t)
}

func TestWatcherBackupRenameThenCreate(t *testing.T) {
	// vim without backupcopy: the old file is renamed away, then a new one
	// is written under the name; for a moment there is no config at all.
	dir := t.TempDir()
	path := filepath.Join(dir, "config.hcl")
	writeFile(t, path, "one")
	rw := startWatcher(t, path, 20*time.Millisecond, 0)
	for _, content := range []string{"two", "three"} {
		if err := os.Rename(path, path+"~"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, path, content)
		rw.waitFired(t)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherTouchWithoutContentChangeDoesNotFire(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.hcl")
	writeFile(t, path, "same")
	rw := startWatcher(t, path, 20*time.Millisecond, 20*time.Millisecond)

	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "same")             // rewritten with identical bytes
	writeFile(t, path+".bak", "neighbour") // another file in the watched directory
	// Several checks after the touch (by debounce or poll) all find no change.
	for range 5 {
		if rw.waitCheck(t) {
			t.Fatal("check after touch reported a change")
		}
	}
	rw.assertNotFired(t)

	// The same watcher still reports a real change, exactly once.
	writeFile(t, path, "different")
	rw.waitFired(t)
	rw.assertNotFired(t)
}

func TestWatcherBurstOfWritesFiresOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.hcl")
	writeFile(t, path, "v0")
	rw := startWatcher(t, path, 300*time.Millisecond, 0)
	for _, v := range []string{"v1", "v2", "v3", "v4", "v5"} {
		writeFile(t, path, v)
	}
	rw.waitFired(t)
	// One more change after the burst: had the burst fired twice, the
	// second firing would be queued before this one.
	writeFile(t, path, "v6")
	rw.waitFired(t)
	rw.assertNotFired(t)
}

func TestWatcherPollCatchesChangesNoEventReports(t *testing.T) {
	// config.hcl -> elsewhere/link -> targets/one.hcl: swapping the middle
	// link changes the config, but happens in a directory nobody watches.
	root := t.TempDir()
	for _, d := range []string{"conf", "elsewhere", "targets"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "targets", "one.hcl"), "one")
	writeFile(t, filepath.Join(root, "targets", "two.hcl"), "two")
	link := filepath.Join(root, "elsewhere", "link")
	mustSymlink(t, filepath.Join(root, "targets", "one.hcl"), link)
	path := filepath.Join(root, "conf", "config.hcl")
	mustSymlink(t, link, path)

	rw := startWatcher(t, path, 10*time.Millisecond, 30*time.Millisecond)
	mustSymlink(t, filepath.Join(root, "targets", "two.hcl"), link+".tmp")
	if err := os.Rename(link+".tmp", link); err != nil {
		t.Fatal(err)
	}
	rw.waitFired(t)
}

func TestWatcherCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.hcl")
	writeFile(t, path, "one")
	w := NewWatcher(path, nil, time.Second, 0)

	steps := []struct {
		name string
		do   func()
		want bool
	}{
		{"nothing happened", func() {}, false},
		{"content changed", func() { writeFile(t, path, "two") }, true},
		{"already observed", func() {}, false},
		{"file vanished", func() { os.Remove(path) }, false},
		{"reappeared unchanged", func() { writeFile(t, path, "two") }, false},
		{"vanished again", func() { os.Remove(path) }, false},
		{"reappeared changed", func() { writeFile(t, path, "three") }, true},
		{"same content behind a symlink", func() {
			writeFile(t, filepath.Join(dir, "real.hcl"), "three")
			os.Remove(path)
			mustSymlink(t, "real.hcl", path)
		}, true}, // the resolved path is part of the identity
	}
	for _, s := range steps {
		s.do()
		if got := w.Check(); got != s.want {
			t.Fatalf("%s: Check() = %v, want %v", s.name, got, s.want)
		}
	}
}

func TestWatcherReportsChangeBeforeRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.hcl")
	writeFile(t, path, "one")
	w := NewWatcher(path, nil, time.Hour, 0)
	writeFile(t, path, "two") // between construction and Run
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fired := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func() { fired <- struct{}{} })
	}()
	select {
	case <-fired:
	case <-time.After(waitTimeout):
		t.Fatal("change made before Run was not reported")
	}
	cancel()
	<-done
}

// logBuffer collects a watcher's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestWatcherLogsAnUnreadableConfigOnceAndKeepsWatching(t *testing.T) {
	for _, tc := range []struct {
		name        string
		unreadable  func(t *testing.T, path string)
		readable    func(t *testing.T, path string)
		skipAsRoot  bool
		wantMessage string
	}{
		{
			name:        "no read permission",
			unreadable:  func(t *testing.T, path string) { os.Chmod(path, 0) },
			readable:    func(t *testing.T, path string) { os.Chmod(path, 0o644) },
			skipAsRoot:  true, // root reads a file whatever its mode
			wantMessage: "permission denied",
		},
		{
			name: "a directory in its place",
			unreadable: func(t *testing.T, path string) {
				os.Remove(path)
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
			},
			readable:    func(t *testing.T, path string) { os.Remove(path) },
			wantMessage: "is a directory",
		},
		{
			// Past the debounce a missing file is no moment of a swap
			// (renames are atomic): someone deleted it.
			name:        "deleted",
			unreadable:  func(t *testing.T, path string) { os.Remove(path) },
			readable:    func(t *testing.T, path string) {},
			wantMessage: "no such file or directory",
		},
		{
			name: "a dangling symlink in its place",
			unreadable: func(t *testing.T, path string) {
				os.Remove(path)
				if err := os.Symlink(path+".gone", path); err != nil {
					t.Fatal(err)
				}
			},
			readable:    func(t *testing.T, path string) { os.Remove(path) },
			wantMessage: "no such file or directory",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skipAsRoot && os.Geteuid() == 0 {
				t.Skip("running as root")
			}
			path := filepath.Join(t.TempDir(), "config.hcl")
			writeFile(t, path, "one")
			logs := &logBuffer{}
			log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})
			rw := runWatcher(t, NewWatcher(path, log, 10*time.Millisecond, 20*time.Millisecond))

			tc.unreadable(t, path)
			// Several checks (by event and by poll) while it stays unreadable.
			for range 5 {
				if rw.waitCheck(t) {
					t.Fatal("an unreadable file was reported as a change")
				}
			}
			rw.assertNotFired(t)
			got := logs.String()
			if n := strings.Count(got, "cannot read config file"); n != 1 {
				t.Fatalf("%d log lines about the unreadable file, want 1:\n%s", n, got)
			}
			if !strings.Contains(got, "[WARN]") || !strings.Contains(got, tc.wantMessage) || !strings.Contains(got, path) {
				t.Errorf("the warning does not say what and where:\n%s", got)
			}

			tc.readable(t, path)
			writeFile(t, path, "two")
			rw.waitFired(t)
		})
	}
}

func TestWatcherWatchesADeletedAndRecreatedDirectoryAgain(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "conf")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.hcl")
	writeFile(t, path, "one")
	rw := startWatcher(t, path, 20*time.Millisecond, 0) // no poll: only events can tell

	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	// The deletion has been looked at (the file is missing: no change)
	// before the directory comes back.
	if rw.waitCheck(t) {
		t.Fatal("a vanished file was reported as a change")
	}
	for round, content := range []string{"two", "three"} {
		if round == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, path, content)
		rw.waitFired(t)
	}
}

func TestWatcherAlsoWatchesOtherFiles(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "config.hcl")
	writeFile(t, path, "config")
	certs := filepath.Join(root, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(certs, "cert.pem"), filepath.Join(certs, "key.pem")
	writeFile(t, cert, "cert 1")
	writeFile(t, key, "key 1")

	w := NewWatcher(path, nil, 20*time.Millisecond, 0)
	w.AlsoWatch(cert, key)
	rw := runWatcher(t, w)
	rw.assertNotFired(t) // adding files is not a change

	writeFile(t, cert, "cert 2") // in place, in a directory of its own
	rw.waitFired(t)

	// A renewal the cert-manager way: a symlinked directory swapped.
	v1, v2 := filepath.Join(root, "..v1"), filepath.Join(root, "..v2")
	for _, d := range []string{v1, v2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(v1, "tls.crt"), "crt 1")
	writeFile(t, filepath.Join(v2, "tls.crt"), "crt 2")
	mustSymlink(t, "..v1", filepath.Join(root, "..data"))
	mustSymlink(t, "..data/tls.crt", filepath.Join(root, "tls.crt"))
	rw.drainChecks()
	w.AlsoWatch(filepath.Join(root, "tls.crt"))
	// The new set is looked at on the next check; the content it had when
	// AlsoWatch was called is not a change.
	writeFile(t, path+".neighbour", "x")
	if rw.waitCheck(t) {
		t.Fatal("the check after AlsoWatch reported a change")
	}
	mustSymlink(t, "..v2", filepath.Join(root, "..data_tmp"))
	if err := os.Rename(filepath.Join(root, "..data_tmp"), filepath.Join(root, "..data")); err != nil {
		t.Fatal(err)
	}
	rw.waitFired(t)
}
