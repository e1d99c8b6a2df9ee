package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/corral-dev/corral/config"
)

// chunkyReader returns data in reads of random size, sometimes pausing, as
// a worker writing a response in pieces would.
type chunkyReader struct {
	data []byte
	rnd  *rand.Rand
}

func (c *chunkyReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.data), 1+c.rnd.IntN(70000))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	if c.rnd.IntN(50) == 0 {
		time.Sleep(time.Millisecond)
	}
	return n, nil
}

// TestSpoolDeliversEveryByteInOrder runs the filler and a slow reader of
// random read sizes through every tier (memory, file, waiting when both are
// full) and checks the bytes, and that the spool gives back all it took.
func TestSpoolDeliversEveryByteInOrder(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		lim  spoolLimits
	}{
		{"memory only", spoolLimits{memory: 1 << 20, limit: 64 << 20}},
		{"one block, no disk (streaming)", spoolLimits{memory: 0, limit: 64 << 20}},
		{"small memory then disk", spoolLimits{memory: 2 * spoolBlock, limit: 64 << 20, disk: 100 << 10, diskLimit: 1 << 30, dir: dir}},
		{"global limit of one block", spoolLimits{memory: 1 << 20, limit: spoolBlock, disk: 1 << 20, diskLimit: 1 << 30, dir: dir}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			data := make([]byte, 3<<20+12345)
			for j := range data {
				data[j] = byte(rnd.Uint32())
			}
			var acct buffers
			s := newSpool(&acct, tc.lim)
			if s == nil {
				t.Fatal("no spool")
			}
			fillErr := make(chan error, 1)
			go func() {
				err := s.fill(&chunkyReader{data: data, rnd: rand.New(rand.NewPCG(uint64(i), 9))})
				s.finish(err)
				fillErr <- err
			}()
			var got bytes.Buffer
			buf := make([]byte, 50000)
			for {
				n, err := s.Read(buf[:1+rnd.IntN(len(buf)-1)])
				got.Write(buf[:n])
				if rnd.IntN(40) == 0 {
					time.Sleep(time.Millisecond) // a slow client
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("read: %v", err)
				}
			}
			s.close()
			if err := <-fillErr; err != nil {
				t.Fatalf("fill: %v", err)
			}
			if sha256.Sum256(got.Bytes()) != sha256.Sum256(data) {
				t.Fatalf("got %d bytes, want %d, or different bytes", got.Len(), len(data))
			}
			if m, d, f := acct.memory.Load(), acct.disk.Load(), acct.files.Load(); m != 0 || d != 0 || f != 0 {
				t.Fatalf("after the response: memory %d, disk %d, files %d; want all 0", m, d, f)
			}
			if tc.lim.disk > 0 && acct.spilled.Load() != 1 {
				t.Fatalf("spilled = %d, want the response counted as spilled", acct.spilled.Load())
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("temporary files left in %s: %v", dir, ents)
			}
		})
	}
}

// TestSpoolWorkerFailureAfterData: the client gets every byte read before
// the worker failed, then the failure (never a clean end).
func TestSpoolWorkerFailureAfterData(t *testing.T) {
	var acct buffers
	s := newSpool(&acct, spoolLimits{memory: 1 << 20, limit: 1 << 30})
	boom := errors.New("worker reset")
	go s.finish(s.fill(io.MultiReader(bytes.NewReader(make([]byte, 100000)), &failing{boom})))
	n, err := io.Copy(io.Discard, s)
	if n != 100000 || !errors.Is(err, boom) {
		t.Fatalf("copied %d, err %v; want 100000 then the worker's error", n, err)
	}
	s.close()
	if acct.memory.Load() != 0 {
		t.Fatalf("memory %d after close", acct.memory.Load())
	}
}

type failing struct{ err error }

func (f *failing) Read([]byte) (int, error) { return 0, f.err }

// TestSpoolCloseAbortsASilentWorker: a client that leaves while the worker
// sends nothing aborts the filler (which would otherwise hold the slot).
func TestSpoolCloseAbortsASilentWorker(t *testing.T) {
	var acct buffers
	s := newSpool(&acct, spoolLimits{memory: 1 << 20, limit: 1 << 30})
	pr, pw := io.Pipe()
	s.abort = abortFunc(func() { _ = pw.CloseWithError(errors.New("aborted")) })
	done := make(chan bool, 1)
	go func() {
		err := s.fill(pr)
		done <- s.finish(err)
	}()
	time.Sleep(20 * time.Millisecond)
	s.close()
	select {
	case aborted := <-done:
		if !aborted {
			t.Fatal("finish did not report the abort")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("filler still blocked on the silent worker after close")
	}
	if acct.memory.Load() != 0 {
		t.Fatalf("memory %d after both sides ended", acct.memory.Load())
	}
}

// TestSpoolMemoryLimit: past the proxy-wide limit there is no spool (the
// response streams), and a full spool makes the filler wait, not grow.
func TestSpoolMemoryLimit(t *testing.T) {
	var acct buffers
	lim := spoolLimits{memory: 1 << 20, limit: 4 * spoolBlock}
	a := newSpool(&acct, lim)
	b := newSpool(&acct, lim)
	if a == nil || b == nil {
		t.Fatal("two spools should fit")
	}
	pr, pw := io.Pipe()
	go func() { a.finish(a.fill(pr)) }()
	go func() {
		for range 10 {
			if _, err := pw.Write(make([]byte, spoolBlock)); err != nil {
				return
			}
		}
		_ = pw.Close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for acct.memory.Load() < 4*spoolBlock && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if m := acct.memory.Load(); m != 4*spoolBlock {
		t.Fatalf("memory %d, want the limit %d reached", m, 4*spoolBlock)
	}
	if c := newSpool(&acct, lim); c != nil {
		t.Fatal("a spool past the memory limit")
	}
	time.Sleep(20 * time.Millisecond)
	if m := acct.memory.Load(); m > 4*spoolBlock {
		t.Fatalf("memory %d past the limit %d", m, 4*spoolBlock)
	}
	if n, err := io.Copy(io.Discard, a); err != nil || n != 10*spoolBlock {
		t.Fatalf("read %d, %v; want %d", n, err, 10*spoolBlock)
	}
	a.close()
	b.finish(nil)
	b.close()
	if acct.memory.Load() != 0 {
		t.Fatalf("memory %d after both spools ended", acct.memory.Load())
	}
}

type abortFunc func()

func (f abortFunc) abortFill() { f() }

// TestSpoolDiskLimit: with the proxy's temporary files at disk_limit, a
// spool uses no file (it waits for its client instead), and a held request
// body of the disk tier streams.
func TestSpoolDiskLimit(t *testing.T) {
	var acct buffers
	acct.disk.Store(1 << 20) // other responses' files
	s := newSpool(&acct, spoolLimits{memory: spoolBlock, limit: 1 << 30, disk: 1 << 20, diskLimit: 1 << 20, dir: t.TempDir()})
	data := bytes.Repeat([]byte("z"), 300<<10)
	go func() { s.finish(s.fill(bytes.NewReader(data))) }()
	got, err := io.ReadAll(s)
	s.close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if acct.spilled.Load() != 0 || acct.files.Load() != 0 {
		t.Fatalf("a file was used past the disk limit: spilled %d", acct.spilled.Load())
	}
	buf := config.Buffering{RequestMemory: 0, RequestDisk: 1 << 20, MemoryLimit: 1 << 30, DiskLimit: 1 << 20}
	b := reqBody{declared: 1000}
	b.open(bytes.NewReader(make([]byte, 1000)), &buf, &acct, 0, nil)
	if b.held || b.file != nil {
		t.Fatal("a request body held on disk past the disk limit")
	}
	b.end(true)
	if acct.disk.Load() != 1<<20 {
		t.Fatalf("disk account %d, want it unchanged", acct.disk.Load())
	}
}
