package pool

import (
	"errors"
	"net"
	"testing"

	"github.com/corral-dev/corral/config"
)

func TestPortsNeverTwice(t *testing.T) {
	p := NewPorts(config.PortRange{First: 31900, Last: 31904})
	got := map[int]bool{}
	for range 5 {
		port, err := p.Take()
		if err != nil {
			t.Fatal(err)
		}
		if got[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		got[port] = true
	}
	if _, err := p.Take(); !errors.Is(err, ErrNoPort) {
		t.Fatalf("Take on a full range = %v, want ErrNoPort", err)
	}
	p.Release(31902)
	if port, err := p.Take(); err != nil || port != 31902 {
		t.Fatalf("Take after Release = %d, %v, want 31902", port, err)
	}
}

func TestPortsNextFit(t *testing.T) {
	p := NewPorts(config.PortRange{First: 31910, Last: 31914})
	first, _ := p.Take()
	p.Release(first)
	second, err := p.Take()
	if err != nil {
		t.Fatal(err)
	}
	if second == first {
		t.Errorf("released port %d reused at once", first)
	}
}

func TestPortsSkipBound(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:31920")
	if err != nil {
		t.Skipf("cannot bind the test port: %v", err)
	}
	defer l.Close()
	p := NewPorts(config.PortRange{First: 31920, Last: 31921})
	port, err := p.Take()
	if err != nil || port != 31921 {
		t.Fatalf("Take = %d, %v, want 31921 (31920 is bound)", port, err)
	}
	const want = "taking a port in worker_ports 31920-31921 (1 held by workers, 1 bound by another program): no free worker port"
	if _, err := p.Take(); !errors.Is(err, ErrNoPort) || err.Error() != want {
		t.Fatalf("Take = %v, want ErrNoPort saying %q", err, want)
	}
}

func TestProcessEqual(t *testing.T) {
	base := config.App{Command: []string{"a", "{port}"}, Dir: "/x", Env: map[string]string{"A": "1"}}
	cases := map[string]func(*config.App){
		"command": func(s *config.App) { s.Command = []string{"a", "b"} },
		"dir":     func(s *config.App) { s.Dir = "/y" },
		"env":     func(s *config.App) { s.Env = map[string]string{"A": "2"} },
		"user":    func(s *config.App) { s.User = "nobody" },
		"group":   func(s *config.App) { s.Group = "nogroup" },
	}
	same := base
	same.Instances = 9
	if !processEqual(&base, &same) {
		t.Error("instances change counted as a process change")
	}
	for name, change := range cases {
		other := base
		change(&other)
		if processEqual(&base, &other) {
			t.Errorf("%s change not seen", name)
		}
	}
}

func TestCredential(t *testing.T) {
	cred, err := credential("root", "")
	if err != nil {
		t.Skipf("no root user here: %v", err)
	}
	if cred.Uid != 0 || cred.Gid != 0 {
		t.Errorf("root credential = %+v", cred)
	}
	if _, err := credential("corral-no-such-user", ""); err == nil {
		t.Error("unknown user accepted")
	}
	if _, err := credential("", "corral-no-such-group"); err == nil {
		t.Error("unknown group accepted")
	}
}
