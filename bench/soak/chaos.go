package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// A kill is one SIGKILL the chaos sent to a worker.
type kill struct {
	at  time.Time
	pid int
	app string
}

// chaos changes the running pool one step at a time: it kills, freezes,
// rolls, scales and reloads, and after each step waits until corral is back
// to its configured shape before the next.
type chaos struct {
	adm       *admin
	cfg       *soakConfig
	corralPid int
	gap       time.Duration // pause between steps
	freeze    time.Duration // how long a frozen worker stays stopped
	timeout   time.Duration // bound on each step's wait
	log       io.Writer     // one line per step, and per kill
	gen       int           // SOAK_GEN in the config file now

	mu       sync.Mutex
	kills    []kill
	done     map[string]int // step -> times done
	left     int            // freezes after which the worker left rotation
	problems []string       // steps that did not reach their state
}

func (c *chaos) run(ctx context.Context) {
	steps := []struct {
		name string
		do   func() error
	}{
		{"kill -9 web worker", func() error { return c.killOne("web") }},
		{"SIGSTOP/SIGCONT web worker", func() error { return c.freezeOne("web") }},
		{"POST /apps/web/restart", func() error { return c.post("/apps/web/restart", nil) }},
		{"kill -9 sock worker", func() error { return c.killOne("sock") }},
		{"POST /apps/web/scale 5 then 3", c.scale},
		{"reload, valid edit (env: a roll)", c.reloadEnv},
		{"SIGSTOP/SIGCONT sock worker", func() error { return c.freezeOne("sock") }},
		{"reload, broken edit (refused)", c.reloadBroken},
		{"POST /workers/sock-1/restart", func() error { return c.post("/workers/sock-1/restart", nil) }},
		{"kill -9 bg worker", func() error { return c.killOne("bg") }},
		{"SIGUSR2 (roll every app)", c.usr2},
		{"reload, valid edit (web 4, then 3)", c.reloadInstances},
	}
	for i := 0; ctx.Err() == nil; i++ {
		s := steps[i%len(steps)]
		t0 := time.Now()
		err := s.do()
		if err == nil {
			err = c.adm.waitFor("every app back to its instances, all ready", c.timeout, (*status).settled)
		}
		c.mu.Lock()
		c.done[s.name]++
		if c.log != nil {
			fmt.Fprintf(c.log, "%s %s: took %s, err %v\n", t0.Format("15:04:05.000"), s.name, time.Since(t0).Round(time.Millisecond), err)
		}
		if err != nil {
			c.problems = append(c.problems, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05"), s.name, err))
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(c.gap):
		}
	}
}

// readyWorker picks a ready worker of app at random.
func (c *chaos) readyWorker(app string) (workerStatus, error) {
	s, err := c.adm.status()
	if err != nil {
		return workerStatus{}, err
	}
	a := s.app(app)
	if a == nil {
		return workerStatus{}, fmt.Errorf("no app %s in /status", app)
	}
	var ready []workerStatus
	for _, w := range a.Workers {
		if w.State == "ready" && w.Pid > 0 {
			ready = append(ready, w)
		}
	}
	if len(ready) == 0 {
		return workerStatus{}, fmt.Errorf("app %s has no ready worker", app)
	}
	return ready[rand.IntN(len(ready))], nil
}

func (c *chaos) killOne(app string) error {
	w, err := c.readyWorker(app)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.kills = append(c.kills, kill{at: time.Now(), pid: w.Pid, app: app})
	if c.log != nil {
		fmt.Fprintf(c.log, "%s kill -9 %s pid %d\n", time.Now().Format("15:04:05.000"), w.ID, w.Pid)
	}
	c.mu.Unlock()
	return syscall.Kill(w.Pid, syscall.SIGKILL)
}

// freezeOne stops a worker for c.freeze, longer than its health check needs
// to take it out of rotation, then lets it go on.
func (c *chaos) freezeOne(app string) error {
	w, err := c.readyWorker(app)
	if err != nil {
		return err
	}
	if err := syscall.Kill(w.Pid, syscall.SIGSTOP); err != nil {
		return err
	}
	defer syscall.Kill(w.Pid, syscall.SIGCONT)
	until := time.Now().Add(c.freeze)
	err = c.adm.waitFor(w.ID+" out of rotation while frozen", c.freeze, func(s *status) bool {
		for _, x := range s.app(app).Workers {
			if x.Pid == w.Pid {
				return x.State != "ready"
			}
		}
		return true
	})
	if err == nil {
		c.mu.Lock()
		c.left++
		c.mu.Unlock()
	}
	time.Sleep(time.Until(until))
	return err
}

// post sends a mutating admin request and wants 200.
func (c *chaos) post(path string, body any) error {
	code, b, err := c.adm.do(http.MethodPost, path, body)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("POST %s: %d %s", path, code, b)
	}
	return nil
}

func (c *chaos) scale() error {
	if err := c.post("/apps/web/scale", map[string]int{"instances": 5}); err != nil {
		return err
	}
	if err := c.adm.waitFor("web at 5 ready", c.timeout, func(s *status) bool { return s.app("web").Instances == 5 && s.settled() }); err != nil {
		return err
	}
	return c.post("/apps/web/scale", map[string]int{"instances": 3})
}

// reload writes the config and waits for corral's verdict on it.
func (c *chaos) reload(webInstances int, broken bool) error {
	s, err := c.adm.status()
	if err != nil {
		return err
	}
	before := s.LastReload.At
	if err := c.cfg.write(c.gen, webInstances, broken); err != nil {
		return err
	}
	return c.adm.waitFor("the reload's outcome", c.timeout, func(s *status) bool {
		return s.LastReload.At.After(before) && s.LastReload.Applied == !broken
	})
}

func (c *chaos) reloadEnv() error {
	c.gen++
	return c.reload(3, false)
}

func (c *chaos) reloadBroken() error {
	if err := c.reload(3, true); err != nil {
		return err
	}
	// Refused: the old config keeps serving.
	code, _, err := c.adm.do(http.MethodGet, "/readyz", nil)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("/readyz after a refused reload: %d %v", code, err)
	}
	return c.reload(3, false)
}

func (c *chaos) reloadInstances() error {
	if err := c.reload(4, false); err != nil {
		return err
	}
	if err := c.adm.waitFor("web at 4 ready", c.timeout, func(s *status) bool { return s.app("web").Instances == 4 && s.settled() }); err != nil {
		return err
	}
	return c.reload(3, false)
}

func (c *chaos) usr2() error {
	t0 := time.Now()
	if err := syscall.Kill(c.corralPid, syscall.SIGUSR2); err != nil {
		return err
	}
	return c.adm.waitFor("every app's roll finished", c.timeout, func(s *status) bool {
		for _, a := range s.Apps {
			if !a.Roll.Finished.After(t0) {
				return false
			}
		}
		return true
	})
}

// allowed reports whether a failed request was one in flight on a worker
// the chaos killed: only a failure a killed worker can cause (a 502 for a
// POST, which corral may not resend; a response or tunnel cut after its head
// came from that very worker, or before the client saw any head), for a
// request that was in flight when the kill was sent or started within slack
// after it.
func allowed(r result, kills []kill, slack time.Duration) bool {
	switch r.fail {
	case "status 502":
		if !r.post {
			return false // corral resends an idempotent request a dead worker never answered
		}
	case "truncated", "tunnel broken":
	case "closed before the head", "h2 stream reset before the head":
		// corral forwards a worker's head with the first bytes of its
		// body, so a worker killed between the two cuts a response whose
		// head the client never saw.
	default:
		return false
	}
	for _, k := range kills {
		if r.start.Before(k.at.Add(slack)) && r.end.After(k.at) && (r.pid == 0 || r.pid == k.pid) {
			return true
		}
	}
	return false
}
