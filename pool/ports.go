package pool

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/corral-dev/corral/config"
)

// ErrNoPort is returned by Ports.Take when every port of the range is taken
// or bound by someone else.
var ErrNoPort = errors.New("no free worker port")

// Ports hands out private worker ports from one range, shared by all apps.
// It uses a next-fit cursor so a port released by a dead worker is not
// handed out again at once (its old connections may still be in TIME_WAIT
// or a stray grandchild may still hold it).
type Ports struct {
	mu     sync.Mutex
	first  int
	last   int
	next   int
	inUse  map[int]bool
	listen func(port int) bool
}

// NewPorts returns a port allocator for the inclusive range r.
func NewPorts(r config.PortRange) *Ports {
	return &Ports{
		first:  r.First,
		last:   r.Last,
		next:   r.First,
		inUse:  make(map[int]bool),
		listen: bindable,
	}
}

// Take returns the next port of the range that no worker holds and that
// can be bound on 127.0.0.1 right now.
func (p *Ports) Take() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	size := p.last - p.first + 1
	elsewhere := 0
	for i := 0; i < size; i++ {
		port := p.next
		p.next++
		if p.next > p.last {
			p.next = p.first
		}
		if p.inUse[port] {
			continue
		}
		if !p.listen(port) {
			elsewhere++
			continue
		}
		p.inUse[port] = true
		return port, nil
	}
	// What holds the range tells the operator what to do: widen
	// worker_ports, or find the program that binds ports in it.
	others := "bound by other programs"
	if elsewhere == 1 {
		others = "bound by another program"
	}
	return 0, fmt.Errorf("taking a port in worker_ports %d-%d (%d held by workers, %d %s): %w",
		p.first, p.last, len(p.inUse), elsewhere, others, ErrNoPort)
}

// Release gives port back to the range.
func (p *Ports) Release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inUse, port)
}

// bindable reports whether port can be listened on at 127.0.0.1: another
// program (or a stray grandchild of an old worker) may hold it.
func bindable(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
