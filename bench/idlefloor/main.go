// Command idlefloor holds idle keep-alive connections for bench/idle.sh and
// serves the two reference servers it measures against:
//
//	idlefloor hold -addr 127.0.0.1:18080 -n 10000   open n connections, one request each, then hold them
//	idlefloor goserver -addr 127.0.0.1:18090         goroutine per connection, blocked in Read, no buffers
//	idlefloor gnet -addr 127.0.0.1:18091             gnet/v2 event loop (no goroutine per connection)
//
// hold prints "ready N" once every connection has its answer, then waits
// for SIGTERM or SIGINT; the servers answer every request with a
// fixed 200. Only loopback addresses are accepted.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
)

var answer = []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: idlefloor hold|goserver|gnet -addr HOST:PORT [-n N]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:18090", "loopback address")
	n := fs.Int("n", 10000, "connections to hold")
	par := fs.Int("parallel", 64, "connections opened at once")
	_ = fs.Parse(os.Args[2:])
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintln(os.Stderr, "idlefloor: -addr must be a loopback address")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "hold":
		err = hold(*addr, *n, *par)
	case "goserver":
		err = goServer(*addr)
	case "gnet":
		err = gnet.Run(&gnetServer{}, "tcp://"+*addr, gnet.WithMulticore(false))
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "idlefloor:", err)
		os.Exit(1)
	}
}

// hold opens n keep-alive connections, makes one request on each, and keeps
// them open and idle until a signal comes.
func hold(addr string, n, par int) error {
	conns := make([]net.Conn, n)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range par {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := oneRequest(addr)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d connections failed, first: %v", f, n, firstErr.Load())
	}
	fmt.Printf("ready %d\n", n)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	for _, c := range conns {
		_ = c.Close()
	}
	return nil
}

func oneRequest(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench.test\r\n\r\n"); err != nil {
		_ = c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 4096), nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// goServer is the floor of a goroutine-per-connection Go server: each
// connection's goroutine answers what it reads (one small pooled buffer
// while reading) and waits in Read with no buffer of its own.
func goServer(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	bufs := sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			for {
				// Wait for the next request holding nothing: the 1-byte
				// read is the goroutine's only buffer while idle.
				var one [1]byte
				if _, err := c.Read(one[:]); err != nil {
					return
				}
				bp := bufs.Get().(*[]byte)
				req := append((*bp)[:0], one[0])
				for !bytes.Contains(req, []byte("\r\n\r\n")) {
					m, err := c.Read((*bp)[len(req):cap(*bp)])
					if err != nil {
						bufs.Put(bp)
						return
					}
					req = (*bp)[:len(req)+m]
				}
				bufs.Put(bp)
				if _, err := c.Write(answer); err != nil {
					return
				}
			}
		}()
	}
}

// gnetServer answers each request head in the inbound buffer with a fixed 200.
type gnetServer struct {
	gnet.BuiltinEventEngine
}

func (s *gnetServer) OnTraffic(c gnet.Conn) gnet.Action {
	buf, err := c.Peek(-1)
	if err != nil && !errors.Is(err, io.ErrShortBuffer) {
		return gnet.Close
	}
	for {
		i := bytes.Index(buf, []byte("\r\n\r\n"))
		if i < 0 {
			return gnet.None
		}
		_, _ = c.Discard(i + 4)
		buf = buf[i+4:]
		if _, err := c.Write(answer); err != nil {
			return gnet.Close
		}
	}
}
