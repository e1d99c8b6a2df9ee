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
// on first use and removes in Close. Every path is new: a replacement
// worker and the one it replaces never share a path.
type Sockets struct {
	parent string // where the directory is made

	mu     sync.Mutex
	dir    string
	seq    int
	closed bool
}

// NewSockets returns a socket allocator whose directory will be made in
// parent; "" means $XDG_RUNTIME_DIR when set, else os.TempDir().
func NewSockets(parent string) *Sockets {
	if parent == "" {
		parent = os.Getenv("XDG_RUNTIME_DIR")
	}
	if parent == "" {
		parent = os.TempDir()
	}
	return &Sockets{parent: parent}
}

// Dir returns the private directory, or "" before the first Take.
func (s *Sockets) Dir() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dir
}

// Take returns a fresh socket path for a worker of slot id. A file already
// at that path (left by a process outside corral's control) is removed so
// the worker can bind it.
func (s *Sockets) Take(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errors.New("taking a socket path: the socket directory is closed")
	}
	if s.dir == "" {
		dir, err := os.MkdirTemp(s.parent, "corral-"+strconv.Itoa(os.Getpid())+"-")
		if err != nil {
			return "", fmt.Errorf("making the socket directory: %w", err)
		}
		s.dir = dir
	}
	s.seq++
	path := filepath.Join(s.dir, id+"."+strconv.Itoa(s.seq)+".sock")
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

// Release removes the socket file a stopped worker left behind.
func (s *Sockets) Release(path string) error {
	return removeSocket(path)
}

// Close removes the directory and every socket in it; a later Take fails.
// It is safe to call more than once.
func (s *Sockets) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.dir == "" {
		return nil
	}
	dir := s.dir
	s.dir = ""
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the socket directory: %w", err)
	}
	return nil
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
		path, err := a.opts.Sockets.Take(s.id)
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
