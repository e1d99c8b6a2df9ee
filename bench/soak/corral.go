package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// admin talks to corral's admin API.
type admin struct {
	base  string
	token string
	c     *http.Client
}

func newAdmin(addr, token string) *admin {
	// No keep-alive: the soak's own admin connections must not sit in
	// corral's goroutine and fd counts.
	return &admin{base: "http://" + addr, token: token,
		c: &http.Client{Timeout: 90 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
}

func (a *admin) do(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if method != http.MethodGet {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

type workerStatus struct {
	ID           string         `json:"id"`
	Pid          int            `json:"pid"`
	State        string         `json:"state"`
	Replacements map[string]int `json:"replacements"`
}

type appStatus struct {
	Name       string         `json:"name"`
	Instances  int            `json:"instances"`
	Configured int            `json:"configured"`
	Workers    []workerStatus `json:"workers"`
	Roll       struct {
		Started  time.Time `json:"started"`
		Finished time.Time `json:"finished"`
	} `json:"roll"`
}

type status struct {
	Pid        int `json:"pid"`
	LastReload struct {
		At      time.Time `json:"at"`
		Trigger string    `json:"trigger"`
		Applied bool      `json:"applied"`
	} `json:"last_reload"`
	Apps []appStatus `json:"apps"`
}

// get answers the body of a GET that answered 200.
func (a *admin) get(path string) ([]byte, error) {
	code, b, err := a.do(http.MethodGet, path, nil)
	if err == nil && code != http.StatusOK {
		err = fmt.Errorf("%s: %d", path, code)
	}
	return b, err
}

func (a *admin) status() (*status, error) {
	b, err := a.get("/status")
	if err != nil {
		return nil, err
	}
	var s status
	return &s, json.Unmarshal(b, &s)
}

func (s *status) app(name string) *appStatus {
	for i := range s.Apps {
		if s.Apps[i].Name == name {
			return &s.Apps[i]
		}
	}
	return nil
}

// settled reports whether every app runs exactly its instances, all ready.
func (s *status) settled() bool {
	for _, a := range s.Apps {
		if len(a.Workers) != a.Instances {
			return false
		}
		for _, w := range a.Workers {
			if w.State != "ready" {
				return false
			}
		}
	}
	return true
}

// waitFor polls /status until ok says yes or timeout passes.
func (a *admin) waitFor(what string, timeout time.Duration, ok func(*status) bool) error {
	deadline := time.Now().Add(timeout)
	for {
		s, err := a.status()
		if err == nil && ok(s) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s (last error %v)", timeout, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metrics is what one scrape of /metrics gives the soak.
type metrics struct {
	goroutines   int
	replacements map[string]float64 // "app worker cause" -> count
}

func (a *admin) metrics() (*metrics, error) {
	b, err := a.get("/metrics")
	if err != nil {
		return nil, err
	}
	m := &metrics{goroutines: -1, replacements: map[string]float64{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			m.goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if rest, ok := strings.CutPrefix(line, "corral_worker_replacements_total{"); ok {
			labels, val, _ := strings.Cut(rest, "} ")
			f, _ := strconv.ParseFloat(val, 64)
			m.replacements[labels] = f
		}
	}
	if m.goroutines < 0 {
		return nil, fmt.Errorf("/metrics has no go_goroutines")
	}
	return m, nil
}

// proc reads a process's open fds and RSS.
func openFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return -1
}

// A sample is corral's own process at one moment.
type sample struct {
	at         time.Time
	goroutines int
	fds        int
	rss        int // KiB
}

// sampler scrapes corral every interval and keeps every sample and the
// highest count of every replacement series seen (a slot scaled away takes
// its series with it, so the highest seen is what it reached).
type sampler struct {
	adm     *admin
	pid     int
	mu      sync.Mutex
	samples []sample
	repl    map[string]float64
}

func (s *sampler) take() (sample, error) {
	m, err := s.adm.metrics()
	if err != nil {
		return sample{}, err
	}
	x := sample{at: time.Now(), goroutines: m.goroutines, fds: openFDs(s.pid), rss: rssKiB(s.pid)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, x)
	for k, v := range m.replacements {
		s.repl[k] = max(s.repl[k], v)
	}
	return x, nil
}

// replacementsByCause sums the highest counts seen per cause.
func (s *sampler) replacementsByCause() map[string]float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]float64{}
	for k, v := range s.repl {
		for _, l := range strings.Split(k, ",") {
			if c, ok := strings.CutPrefix(l, `cause="`); ok {
				out[strings.TrimSuffix(c, `"`)] += v
			}
		}
	}
	return out
}

// soakConfig is the soak's corral config; gen, instances and broken vary.
type soakConfig struct {
	path, bin, listen, adminAddr, token, ports string
}

func (c *soakConfig) write(gen, webInstances int, broken bool) error {
	q := strconv.Quote
	health := `  health {
    path                = "/healthz"
    interval            = "250ms"
    timeout             = "200ms"
    unhealthy_threshold = 2
  }
`
	text := fmt.Sprintf(`# written by bench/soak
listen       = %[1]s
worker_ports = %[2]s

admin {
  listen = %[3]s
  token  = %[4]s
}

proxy {
  h2c                 = true
  worker_idle_timeout = "2s"
}

app "web" {
  command       = [%[5]s, "worker", "-port", "{port}"]
  env           = { SOAK_GEN = "%[6]d" }
  instances     = %[7]d
  drain_timeout = "10s"
%[8]s}

app "sock" {
  command       = [%[5]s, "worker", "-socket", "{socket}"]
  path_prefix   = "/sock"
  strip_prefix  = true
  instances     = 2
  drain_timeout = "10s"
%[8]s}

app "bg" {
  command     = [%[5]s, "background"]
  serve       = false
  instances   = 1
  settle_time = "300ms"
}
`, q(c.listen), q(c.ports), q(c.adminAddr), q(c.token), q(c.bin), gen, webInstances, health)
	if broken {
		text += "\napp \"broken\" {\n  command = [\n" // a syntax error: the block never closes
	}
	// A new file renamed over the old one, so corral never reads half of it.
	tmp := filepath.Join(filepath.Dir(c.path), ".config.hcl.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.path)
}
