package pool

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/corral-dev/corral/config"
)

// MaxSocketPath is the longest Unix socket path a worker is given, in
// bytes: sockaddr_un's sun_path holds 108 on Linux, and most runtimes
// (libuv, CPython) want room for the terminating NUL.
const MaxSocketPath = 107

// ErrSocketPathTooLong is returned by Sockets.Take when the path it would
// hand out does not fit in a Unix socket address.
var ErrSocketPathTooLong = errors.New("unix socket path too long")

// Sockets hands out Unix socket paths to the workers of apps whose command
// contains {socket}, all in one private directory (mode 0700) that it makes
// on first use and removes in Close. Workers that run as another user (an
// app's user/group) get a private directory of their own, owned by that
// user, so they can bind there and no other user can reach their sockets.
// Every path is new: a replacement worker and the one it replaces never
// share a path.
type Sockets struct {
	parent string // where corral's own directory is made
	shared string // where other users' directories are made: every user can traverse it

	mu     sync.Mutex
	dirs   map[[2]uint32]string // uid, gid -> directory made for workers running as them
	seq    int
	closed bool
}

// NewSockets returns a socket allocator whose directories will be made in
// parent; "" means $XDG_RUNTIME_DIR when set, else os.TempDir(), and for
// workers running as another user always os.TempDir() (a user's runtime
// directory is closed to the others).
func NewSockets(parent string) *Sockets {
	s := &Sockets{parent: parent, shared: parent}
	if parent == "" {
		s.parent, s.shared = os.Getenv("XDG_RUNTIME_DIR"), os.TempDir()
	}
	if s.parent == "" {
		s.parent = os.TempDir()
	}
	return s
}

// Dir returns the directory of workers running as corral's own user, or ""
// before the first of them took a path.
func (s *Sockets) Dir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dirs[[2]uint32{uint32(os.Getuid()), uint32(os.Getgid())}]
}

// Take returns a fresh socket path for a worker of slot id that runs as
// owner (nil: as corral). A file already at that path (left by a process
// outside corral's control) is removed so the worker can bind it.
func (s *Sockets) Take(id string, owner *syscall.Credential) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errors.New("taking a socket path: the socket directory is closed")
	}
	dir, err := s.dirFor(owner)
	if err != nil {
		return "", err
	}
	s.seq++
	path := filepath.Join(dir, id+"."+strconv.Itoa(s.seq)+".sock")
	if len(path) > MaxSocketPath {
		return "", fmt.Errorf("socket path %s is %d bytes, more than the %d a Unix socket address holds: "+
			"point XDG_RUNTIME_DIR or TMPDIR at a shorter directory, or shorten the app's name: %w",
			path, len(path), MaxSocketPath, ErrSocketPathTooLong)
	}
	if err := removeSocket(path); err != nil {
		return "", err
	}
	return path, nil
}

// dirFor returns the directory for workers running as owner, making it
// (mode 0700, owned by owner) on first use. The caller holds s.mu.
func (s *Sockets) dirFor(owner *syscall.Credential) (string, error) {
	key := [2]uint32{uint32(os.Getuid()), uint32(os.Getgid())}
	parent, prefix := s.parent, "corral-"+strconv.Itoa(os.Getpid())+"-"
	if owner != nil && (owner.Uid != key[0] || owner.Gid != key[1]) {
		key = [2]uint32{owner.Uid, owner.Gid}
		parent, prefix = s.shared, prefix+"u"+strconv.FormatUint(uint64(owner.Uid), 10)+"-"
	}
	if dir, ok := s.dirs[key]; ok {
		return dir, nil
	}
	dir, err := os.MkdirTemp(parent, prefix)
	if err != nil {
		return "", fmt.Errorf("making the socket directory: %w", err)
	}
	if key != [2]uint32{uint32(os.Getuid()), uint32(os.Getgid())} {
		if err := os.Chown(dir, int(key[0]), int(key[1])); err != nil {
			_ = os.Remove(dir)
			return "", fmt.Errorf("giving the socket directory to uid %d: %w", key[0], err)
		}
	}
	if s.dirs == nil {
		s.dirs = map[[2]uint32]string{}
	}
	s.dirs[key] = dir
	return dir, nil
}

// Release removes the socket file a stopped worker left behind.
func (s *Sockets) Release(path string) error {
	return removeSocket(path)
}

// Close removes the directories and every socket in them; a later Take
// fails. It is safe to call more than once.
func (s *Sockets) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, dir := range s.dirs {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing the socket directory: %w", err))
		}
	}
	s.dirs = nil
	return errors.Join(errs...)
}

// removeSocket removes the file at path if there is one.
func removeSocket(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}

// listenAddr is where a worker listens: a loopback port or a Unix socket
// path. The zero value, a background worker's, is nowhere.
type listenAddr struct {
	port   int
	socket string
}

// none reports whether the worker listens nowhere (a background app).
func (l listenAddr) none() bool { return l.port == 0 && l.socket == "" }

// dial returns what the proxy and the probe connect to: "127.0.0.1:PORT",
// or the socket's absolute path.
func (l listenAddr) dial() string {
	if l.socket != "" {
		return l.socket
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(l.port))
}

// takeAddr gives a worker of s, about to start from spec, where to listen.
func (a *App) takeAddr(s *slot, spec *config.App) (listenAddr, error) {
	switch {
	case spec.Background:
		return listenAddr{}, nil
	case spec.UsesSocket():
		if a.opts.Sockets == nil {
			return listenAddr{}, errors.New("taking a socket path: no socket directory")
		}
		var owner *syscall.Credential
		if spec.User != "" || spec.Group != "" {
			var err error
			if owner, err = credential(spec.User, spec.Group); err != nil {
				return listenAddr{}, err
			}
		}
		path, err := a.opts.Sockets.Take(s.id, owner)
		return listenAddr{socket: path}, err
	default:
		port, err := a.opts.Ports.Take()
		return listenAddr{port: port}, err
	}
}

// releaseAddr gives back what takeAddr gave once nothing listens there any
// more: the port returns to the range, the socket file is removed.
func (a *App) releaseAddr(l listenAddr) {
	if l.port > 0 {
		a.opts.Ports.Release(l.port)
	}
	if l.socket != "" {
		if err := a.opts.Sockets.Release(l.socket); err != nil {
			a.log.Warn("cannot remove socket", "error", err)
		}
	}
}
