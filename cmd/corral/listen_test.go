package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const listenWeb = `
listen       = "{public}"
worker_ports = "{ports}"
admin { listen = "{admin}" }
app "web" {
  command   = ["{testapp}"]
  instances = 1
}
`

type wireReload struct {
	Applied  bool     `json:"applied"`
	Changes  string   `json:"changes"`
	Problems []string `json:"problems"`
	Error    string   `json:"error"`
}

// postReload asks corral at admin to reload and returns the answer.
func postReload(t *testing.T, admin string) (wireReload, int) {
	t.Helper()
	resp, err := http.Post("http://"+admin+"/reload", "", nil)
	if err != nil {
		t.Fatalf("POST /reload: %v", err)
	}
	defer resp.Body.Close()
	var res wireReload
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatalf("decoding the reload answer: %v", err)
	}
	return res, resp.StatusCode
}

// fresh is a client that opens a new connection per request.
var fresh = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

func servesPlain(addr string) bool {
	resp, err := fresh.Get("http://" + addr + "/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func TestListenEditsOnTheSamePortApply(t *testing.T) {
	c := newCorral(t, listenWeb)
	c.waitReady(30 * time.Second)
	public, admin := c.public, c.admin

	// The same ports under another name: binding the new address beside
	// the old one fails with "address already in use".
	c.public = "localhost:" + public[strings.LastIndexByte(public, ':')+1:]
	c.admin = "localhost:" + admin[strings.LastIndexByte(admin, ':')+1:]
	c.writeConfig(listenWeb)
	res, code := postReload(t, admin)
	if code != 200 || !res.Applied {
		t.Fatalf("reload of listen and admin.listen on the same ports: %d %+v", code, res)
	}
	waitFor(t, 5*time.Second, "the public port to serve", func() bool { return servesPlain(public) })
	waitFor(t, 5*time.Second, "the admin port to serve", func() bool {
		resp, err := fresh.Get("http://" + admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestFailedReloadKeepsThePublicPortServing(t *testing.T) {
	c := newCorral(t, listenWeb)
	c.waitReady(30 * time.Second)
	certs := filepath.Join(c.dir, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCert(t, certs, 1)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	// TLS on the same address needs the public port rebound; the admin
	// move that follows cannot bind.
	admin := c.admin
	c.admin = busy.Addr().String()
	c.writeConfig(strings.Replace(listenWeb, "admin {", `proxy {
  tls {
    cert = "{dir}/certs/cert.pem"
    key  = "{dir}/certs/key.pem"
  }
}
admin {`, 1))
	res, code := postReload(t, admin)
	if res.Applied || code == 200 {
		t.Fatalf("reload with a busy admin address applied: %d %+v", code, res)
	}
	if !strings.Contains(res.Error, busy.Addr().String()) {
		t.Errorf("the reload error does not name the busy address: %+v", res)
	}
	if !servesPlain(c.public) {
		t.Fatalf("the public port %s stopped serving after a reload that kept the running config", c.public)
	}
	if got := servedSerial(c.public); got != 0 {
		t.Errorf("the public port serves TLS (serial %d) although the reload was not applied", got)
	}
}
