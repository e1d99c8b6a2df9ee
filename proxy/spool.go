package proxy

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// A spool holds a worker's response between the worker and a slow client:
// one goroutine (the filler) reads the worker's body as fast as the worker
// sends it, the engine's client writer reads from the spool as fast as the
// client takes it, and the worker's slot is freed as soon as the filler is
// done. Nothing waits for the response to be whole: bytes reach the client
// as soon as they reach the spool, so buffering adds no latency and event
// streams still flow event by event.
//
// What is ahead of the client lives in memory blocks, up to the response's
// memory bound and the proxy-wide memory limit, then in a temporary file
// (unlinked at once, so nothing is left on disk however corral ends), up to
// the response's disk bound. Past both the filler waits for the client:
// the rest of the response moves at the client's speed, as unbuffered.

// spoolBlock is the unit of spool memory. Every spool holds at least one
// for its whole life, so it can always make progress.
const spoolBlock = 32 << 10

type block = [spoolBlock]byte

var spoolBlocks = sync.Pool{New: func() any { return new(block) }}

// buffers is the proxy-wide account of buffered bytes, for the memory limit
// and the metrics.
type buffers struct {
	memory  atomic.Int64 // bytes of spool blocks and held request bodies
	disk    atomic.Int64 // bytes written to temporary files and not yet read
	staging atomic.Int64 // bytes of blocks staging writes to temporary files
	files   atomic.Int64 // temporary files open
	spooled atomic.Int64 // responses buffered so far (a counter)
	spilled atomic.Int64 // of which some part went to disk (a counter)

	// log says when a temporary file cannot be made or written, once a
	// minute at most for request bodies and for responses.
	log                    hclog.Logger
	bodyFailed, respFailed logLimit
}

// fileFailed logs that a temporary file in dir could not be made or
// written (err), so a request body (body) or a response streams instead.
func (b *buffers) fileFailed(body bool, dir string, err error) {
	what, limit := "response", &b.respFailed
	if body {
		what, limit = "request body", &b.bodyFailed
	}
	if b.log != nil && limit.due() {
		if dir == "" {
			dir = os.TempDir()
		}
		b.log.Warn("cannot write a buffer file; streaming the "+what+" instead", "dir", dir, "error", err,
			"hint", "free space in proxy.buffering.dir or lower request_disk/response_disk/disk_limit")
	}
}

// reserve takes n bytes of memory if the total stays within limit.
func (b *buffers) reserve(n, limit int64) bool {
	for {
		cur := b.memory.Load()
		if cur+n > limit {
			return false
		}
		if b.memory.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (b *buffers) free(n int64) { b.memory.Add(-n) }

// reserveDisk counts n bytes of temporary files if the total stays within limit.
func (b *buffers) reserveDisk(n, limit int64) bool {
	for {
		cur := b.disk.Load()
		if cur+n > limit {
			return false
		}
		if b.disk.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// BufferStats is a snapshot of the proxy's buffers, for metrics.
type BufferStats struct {
	MemoryBytes, DiskBytes, StagingBytes, Files int64
	Spooled, Spilled                            int64
}

// BufferStats reports what the proxy holds for slow clients now.
func (p *Proxy) BufferStats() BufferStats {
	b := &p.buffers
	return BufferStats{
		MemoryBytes: b.memory.Load(), DiskBytes: b.disk.Load(), StagingBytes: b.staging.Load(),
		Files: b.files.Load(), Spooled: b.spooled.Load(), Spilled: b.spilled.Load(),
	}
}

// segment is a run of spooled bytes, [r, w) of a memory block or of the
// temporary file.
type segment struct {
	blk  *block // nil for a file segment
	r, w int64
}

// errSpoolClosed is what the filler gets once the client side has gone.
var errSpoolClosed = errors.New("client side of the response closed")

// spoolLimits are one spool's bounds.
type spoolLimits struct {
	memory int64 // this spool's blocks, in bytes (at least one block)
	limit  int64 // the proxy-wide memory limit
	disk   int64 // bytes ahead of the client in the temporary file
	// diskLimit bounds the proxy's temporary files together.
	diskLimit int64
	dir       string
}

type spool struct {
	acct *buffers
	lim  spoolLimits
	// filled counts the bytes read from the worker; only the filler
	// touches it, and reads it once fill has returned.
	filled int64

	mu     sync.Mutex
	cond   sync.Cond
	segs   []segment
	spare  *block // a consumed block kept so the spool never holds none
	blocks int64  // blocks held (in segs and spare)
	file   *os.File
	fileAt int64 // where the next file write goes
	disk   int64 // file bytes not yet read
	stage  *block
	// filling is set while the filler writes outside the lock into the tail
	// segment it was given.
	filling bool
	done    bool  // the filler is finished
	err     error // why the worker's side ended early (after the data before it)
	closed  bool  // the client side is finished
	// abort, if set, makes a filler blocked on a silent worker give up; it
	// runs under the lock, only while the filler is not done.
	abort aborter
	// aborted is set once abort ran: the worker connection must not be reused.
	aborted bool
	segBuf  [4]segment // segs' first backing array
}

// aborter stops a filler's read of the worker.
type aborter interface{ abortFill() }

// newSpool returns a spool holding its first block, or nil when the memory
// limit leaves no room for one (the response is then relayed unbuffered).
func newSpool(acct *buffers, lim spoolLimits) *spool {
	if !acct.reserve(spoolBlock, lim.limit) {
		return nil
	}
	lim.memory = max(lim.memory, spoolBlock)
	s := &spool{acct: acct, lim: lim, spare: spoolBlocks.Get().(*block), blocks: 1}
	s.segs = s.segBuf[:0]
	s.cond.L = &s.mu
	acct.spooled.Add(1)
	return s
}

// space returns where the filler writes next: the tail memory block, a new
// memory block, or the staging block of a file write (toFile). It waits
// while every tier is full; ok is false once the client side has closed.
// Called with s.mu held.
func (s *spool) space() (dst []byte, toFile bool, ok bool) {
	for {
		if s.closed {
			return nil, false, false
		}
		if n := len(s.segs); n > 0 && s.segs[n-1].blk != nil {
			t := &s.segs[n-1]
			if t.r == t.w && n == 1 {
				t.r, t.w = 0, 0 // all read: write from the start again
			}
			if t.w < spoolBlock {
				return t.blk[t.w:], false, true
			}
		}
		if blk := s.newBlock(); blk != nil {
			s.segs = append(s.segs, segment{blk: blk})
			return blk[:], false, true
		}
		if s.lim.disk > 0 && s.disk < s.lim.disk {
			if room := min(s.fileRoom(), s.lim.diskLimit-s.acct.disk.Load()); room > 0 && s.openFile() {
				if s.stage == nil {
					s.stage = spoolBlocks.Get().(*block)
					s.acct.staging.Add(spoolBlock)
				}
				return s.stage[:min(spoolBlock, room)], true, true
			}
		}
		s.cond.Wait()
	}
}

// fileRoom sets fileAt to where the next file write goes and returns how
// much fits there without overwriting unread bytes: the file is a ring of
// lim.disk bytes, so it never grows past that however long the response.
// Called with s.mu held, by the filler.
func (s *spool) fileRoom() int64 {
	c := s.lim.disk
	if s.disk == 0 {
		s.fileAt = 0
		return c
	}
	rp := int64(-1) // where the oldest unread file bytes start
	for _, g := range s.segs {
		if g.blk == nil && g.r < g.w {
			rp = g.r
			break
		}
	}
	switch {
	case rp < 0 || s.fileAt > rp:
		if s.fileAt < c {
			return c - s.fileAt
		}
		if rp > 0 {
			s.fileAt = 0 // wrap: the start of the ring has been read
			return rp
		}
		return 0
	case s.fileAt < rp:
		return rp - s.fileAt
	default:
		return 0 // full
	}
}

// keepStaged keeps the n bytes staged for a file write that failed (disk
// full, file too large) as a memory segment, and turns the disk tier off:
// a local failure must neither lose the worker's bytes nor be blamed on the
// worker. The block is counted as memory even past the limit (one block).
// Called with s.mu held.
func (s *spool) keepStaged(n int) {
	s.lim.disk = 0
	blk := s.stage
	s.stage = nil
	s.acct.staging.Add(-spoolBlock)
	s.acct.memory.Add(spoolBlock)
	s.blocks++
	s.segs = append(s.segs, segment{blk: blk, w: int64(n)})
	s.cond.Broadcast()
}

// newBlock returns a block for a new memory segment within the bounds, or nil.
func (s *spool) newBlock() *block {
	if s.spare != nil {
		b := s.spare
		s.spare = nil
		return b
	}
	if (s.blocks+1)*spoolBlock > s.lim.memory || !s.acct.reserve(spoolBlock, s.lim.limit) {
		return nil
	}
	s.blocks++
	return spoolBlocks.Get().(*block)
}

// openFile makes the temporary file on first use; without one, the disk
// tier is off for this spool.
func (s *spool) openFile() bool {
	if s.file != nil {
		return true
	}
	f, err := os.CreateTemp(s.lim.dir, "corral-spool-")
	if err != nil {
		s.lim.disk = 0
		s.acct.fileFailed(false, s.lim.dir, err)
		return false
	}
	_ = os.Remove(f.Name()) // the file lives until it is closed, and no longer
	s.file = f              // once per spool: it is kept until release
	s.acct.files.Add(1)
	s.acct.spilled.Add(1)
	return true
}

// fill reads src into the spool until src ends, fails, or the client side
// closes (errSpoolClosed). It returns src's error, nil at its end. The
// caller then calls finish.
func (s *spool) fill(src io.Reader) error {
	s.mu.Lock()
	for {
		dst, toFile, ok := s.space()
		if !ok {
			s.mu.Unlock()
			return errSpoolClosed
		}
		s.filling = true
		at := s.fileAt
		s.mu.Unlock()
		n, err := src.Read(dst)
		var werr error
		if n > 0 && toFile {
			_, werr = s.file.WriteAt(dst[:n], at)
		}
		s.mu.Lock()
		s.filling = false
		s.filled += int64(n)
		switch {
		case n > 0 && werr != nil:
			s.acct.fileFailed(false, s.lim.dir, werr)
			s.keepStaged(n)
		case n > 0:
			s.publish(n, toFile, at)
		}
		switch {
		case err == io.EOF:
			s.mu.Unlock()
			return nil
		case err != nil:
			s.mu.Unlock()
			return err
		}
	}
}

// publish makes n bytes just written visible to the reader. Called with
// s.mu held.
func (s *spool) publish(n int, toFile bool, at int64) {
	if toFile {
		if k := len(s.segs); k > 0 && s.segs[k-1].blk == nil && s.segs[k-1].w == at {
			s.segs[k-1].w += int64(n)
		} else {
			s.segs = append(s.segs, segment{r: at, w: at + int64(n)})
		}
		s.fileAt = at + int64(n)
		s.disk += int64(n)
		s.acct.disk.Add(int64(n))
	} else {
		s.segs[len(s.segs)-1].w += int64(n)
	}
	s.cond.Broadcast()
}

// finish ends the worker's side: err is why it ended early, nil at its end.
// It reports whether the client side had aborted the filler.
func (s *spool) finish(err error) (aborted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done, s.err = true, err
	s.cond.Broadcast()
	if s.stage != nil {
		spoolBlocks.Put(s.stage)
		s.stage = nil
		s.acct.staging.Add(-spoolBlock)
	}
	if s.closed {
		s.release()
	}
	return s.aborted
}

// Read reads what is spooled, waiting for the filler when it has nothing
// yet. After the data, it returns the worker's failure if it had one, else
// io.EOF.
func (s *spool) Read(p []byte) (int, error) {
	s.mu.Lock()
	for {
		if s.closed {
			s.mu.Unlock()
			return 0, errSpoolClosed
		}
		if len(s.segs) > 0 {
			h := &s.segs[0]
			if h.r < h.w {
				break
			}
			if len(s.segs) > 1 {
				s.popHead()
				continue
			}
		}
		if s.done {
			err := s.err
			s.mu.Unlock()
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		s.cond.Wait()
	}
	h := &s.segs[0]
	if h.blk != nil {
		n := copy(p, h.blk[h.r:h.w])
		h.r += int64(n)
		if h.r == h.w && h.w == spoolBlock && len(s.segs) > 1 {
			s.popHead()
		} else if h.r == h.w {
			s.cond.Broadcast() // a filler waiting for room may reuse the block
		}
		s.mu.Unlock()
		return n, nil
	}
	at, end := h.r, h.w
	s.mu.Unlock()
	n, err := s.file.ReadAt(p[:min(int64(len(p)), end-at)], at)
	s.mu.Lock()
	h = &s.segs[0] // the filler may have appended, never removed
	h.r += int64(n)
	s.disk -= int64(n)
	s.acct.disk.Add(-int64(n))
	if h.r == h.w {
		s.popHead() // a file segment is never written into again once read
	}
	if s.disk == 0 && !s.filling {
		s.fileAt = 0 // nothing left in the file: write from its start again
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	if err != nil && n > 0 {
		err = nil
	}
	return n, err
}

// popHead removes the first segment, fully read. Called with s.mu held,
// never for the segment the filler is writing.
func (s *spool) popHead() {
	h := s.segs[0]
	copy(s.segs, s.segs[1:])
	s.segs = s.segs[:len(s.segs)-1]
	if h.blk != nil {
		if s.spare == nil {
			s.spare = h.blk
		} else {
			s.blocks--
			spoolBlocks.Put(h.blk)
			s.acct.free(spoolBlock)
		}
	}
	s.cond.Broadcast()
}

// close ends the client side. A filler still waiting on the worker is
// aborted; whichever side is last frees the spool's memory and file.
func (s *spool) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.cond.Broadcast()
	if !s.done {
		if s.abort != nil {
			s.abort.abortFill()
			s.aborted = true
		}
		return
	}
	s.release()
}

// release frees everything the spool holds. Called with s.mu held, once
// both sides are finished.
func (s *spool) release() {
	for _, g := range s.segs {
		if g.blk != nil {
			spoolBlocks.Put(g.blk)
		}
	}
	if s.spare != nil {
		spoolBlocks.Put(s.spare)
		s.spare = nil
	}
	s.segs = nil
	s.acct.free(s.blocks * spoolBlock)
	s.blocks = 0
	if s.file != nil {
		_ = s.file.Close()
		s.file = nil
		s.acct.files.Add(-1)
		s.acct.disk.Add(-s.disk)
		s.disk = 0
	}
}
