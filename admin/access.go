package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Access says who may use the admin API. The Server holds one at a time;
// SetAccess replaces it (a reload), and requests read it without a lock.
type Access struct {
	// Listen is admin.listen as configured. A host that is not a loopback
	// address or "localhost" (a wildcard such as 0.0.0.0 or ":9180", an
	// interface address, another name) makes the API reachable from other
	// machines: without a Token it is then read-only. "" (an embedded
	// handler, tests) counts as loopback.
	Listen string
	// Token is the bearer token every mutating endpoint and /logs require;
	// "" = none.
	Token string
	// Hosts are host names the API answers to beside loopback names, IP
	// literals and the listen host (admin.hosts).
	Hosts []string
}

// access is an Access prepared for the request path.
type access struct {
	Access
	tokenSum   [sha256.Size]byte // compared instead of the token: equal length, constant time
	readOnly   bool              // reachable from other machines and no token
	listenHost string            // lowercased host of Listen
}

func newAccess(a Access) *access {
	p := &access{Access: a, readOnly: a.Token == "" && !loopbackListen(a.Listen)}
	if a.Token != "" {
		p.tokenSum = sha256.Sum256([]byte(a.Token))
	}
	if host, _, err := net.SplitHostPort(a.Listen); err == nil {
		p.listenHost = strings.ToLower(host)
	}
	return p
}

// loopbackListen reports whether a listen address only accepts
// connections from this machine.
func loopbackListen(listen string) bool {
	if listen == "" {
		return true
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// SetAccess applies a (at start, and on each reload: a new token or hosts
// take effect for the next request). It warns when the API becomes
// read-only, and says when it stops being so.
func (s *Server) SetAccess(a Access) {
	next := newAccess(a)
	prev := s.access.Swap(next)
	wasReadOnly := prev != nil && prev.readOnly
	switch {
	case next.readOnly && (!wasReadOnly || prev.Listen != next.Listen):
		s.log.Warn("admin api is read-only: admin.listen is not a loopback address and no token is set; "+
			"set admin.token, admin.token_file or CORRAL_ADMIN_TOKEN to allow reload, restart and scale",
			"listen", a.Listen)
	case wasReadOnly && !next.readOnly:
		s.log.Info("admin api accepts changes again", "listen", a.Listen, "token", next.Token != "")
	}
	if prev != nil && prev.Token != "" && next.Token != "" && prev.tokenSum != next.tokenSum {
		s.log.Info("admin token changed")
	}
}

// refusal is the JSON body of a request the access rules refuse.
type refusal struct {
	Result string `json:"result"` // "failed"
	Error  string `json:"error"`
}

func (s *Server) refuse(w http.ResponseWriter, code int, format string, args ...any) {
	s.writeJSON(w, code, refusal{Result: "failed", Error: fmt.Sprintf(format, args...)})
}

// checkHost refuses a request whose Host names this API by a name it does
// not know: a page on evil.example whose name is re-pointed at 127.0.0.1
// (DNS rebinding) reaches the port as same-origin, but its requests still
// carry Host: evil.example. Accepted: no Host (HTTP/1.0), any IP literal (a
// page's origin can only be an IP address if that address served it, so
// there is nothing to rebind; this is what Kubernetes probes and
// Prometheus send: the pod IP), localhost, the listen host and admin.hosts.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.access.Load().hostAllowed(r.Host) {
			s.refuse(w, http.StatusForbidden, "host %q refused: the admin api answers to IP addresses, localhost, "+
				"its listen host and the names in admin.hosts (a guard against DNS rebinding)", r.Host)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *access) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" || host == "localhost" || host == a.listenHost {
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	for _, h := range a.Hosts {
		if h == host || (strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:])) {
			return true
		}
	}
	return false
}

// needsToken reports whether r may change corral (any method but GET and
// HEAD, whatever the path) or reads the apps' own output (/logs).
func needsToken(r *http.Request) bool {
	return (r.Method != http.MethodGet && r.Method != http.MethodHead) || r.URL.Path == "/logs"
}

// authorize guards what needsToken names: with a token, the request must
// carry it as "Authorization: Bearer <token>" (401 without, 403 when
// wrong); without one, an API reachable from other machines refuses (403).
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := s.access.Load()
		switch {
		case !needsToken(r):
		case a.Token != "":
			scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
			if !strings.EqualFold(scheme, "Bearer") || tok == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="corral"`)
				s.refuse(w, http.StatusUnauthorized, "this endpoint needs Authorization: Bearer <admin token>")
				return
			}
			sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
			if subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="corral", error="invalid_token"`)
				s.refuse(w, http.StatusForbidden, "wrong admin token")
				return
			}
		case a.readOnly:
			s.refuse(w, http.StatusForbidden, "the admin api is read-only: admin.listen %s is not a loopback address "+
				"and no token is set; set admin.token, admin.token_file or CORRAL_ADMIN_TOKEN and send it as "+
				"Authorization: Bearer <token>", a.Listen)
			return
		}
		next.ServeHTTP(w, r)
	})
}
