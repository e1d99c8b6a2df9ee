package proxy

import (
	"sort"
	"strings"

	"github.com/corral-dev/corral/config"
	"github.com/corral-dev/corral/pool"
)

// TableSource gives an app's current routing table (pool.App satisfies it).
type TableSource interface {
	// Table returns the app's current routing table; it may be nil before the first publish.
	Table() *pool.Table
}

// route is one app as the request path sees it: its spec, where its table
// lives, its balancing policy and its queue. Routes are rebuilt on every
// SetApps; the queue is carried over for apps that keep their name.
type route struct {
	name   string
	spec   *config.App
	src    TableSource
	sel    Selector
	queue  *queue
	prefix string
	strip  bool
	// cookieName is the sticky cookie for BalanceCookie, "" otherwise.
	cookieName string
}

// strippedPath returns path with the route's prefix removed when the app
// asks for it ("/api/x" -> "/x", "/api" -> "/").
func (rt *route) strippedPath(path string) string {
	if !rt.strip || rt.prefix == "" || rt.prefix == "/" {
		return path
	}
	rest := path[len(rt.prefix):]
	if rest == "" || rest[0] != '/' {
		return "/" + rest
	}
	return rest
}

// hostRoutes are the apps claiming one host pattern.
type hostRoutes struct {
	prefixed []*route // longest prefix first
	bare     *route   // claims the host without a prefix
}

// wildcard is a "*.example.com" claim, stored as its suffix ".example.com".
type wildcard struct {
	suffix string
	routes *hostRoutes
}

// router picks the app for a request. It is immutable once built, so the
// request path reads it through an atomic pointer without locks.
type router struct {
	exact      map[string]*hostRoutes
	wildcards  []wildcard // longest suffix first
	prefixOnly []*route   // longest prefix first
	fallback   *route
	byName     map[string]*route
}

// newRouter builds a router from the apps' routes.
func newRouter(routes []*route) *router {
	r := &router{exact: map[string]*hostRoutes{}, byName: map[string]*route{}}
	wild := map[string]*hostRoutes{}
	for _, rt := range routes {
		r.byName[rt.name] = rt
		if len(rt.spec.Hosts) == 0 {
			if rt.prefix == "" {
				if r.fallback == nil {
					r.fallback = rt
				}
				continue
			}
			r.prefixOnly = append(r.prefixOnly, rt)
			continue
		}
		for _, h := range rt.spec.Hosts {
			h = string(normalizeHost(h, nil)) // as requests are compared: no port, lowercase
			m, key := r.exact, h
			if strings.HasPrefix(h, "*.") {
				m, key = wild, h[1:]
			}
			hr := m[key]
			if hr == nil {
				hr = &hostRoutes{}
				m[key] = hr
			}
			if rt.prefix == "" {
				if hr.bare == nil {
					hr.bare = rt
				}
			} else {
				hr.prefixed = append(hr.prefixed, rt)
			}
		}
	}
	byPrefix := func(rs []*route) {
		sort.SliceStable(rs, func(i, j int) bool { return len(rs[i].prefix) > len(rs[j].prefix) })
	}
	for _, hr := range r.exact {
		byPrefix(hr.prefixed)
	}
	for suffix, hr := range wild {
		byPrefix(hr.prefixed)
		r.wildcards = append(r.wildcards, wildcard{suffix: suffix, routes: hr})
	}
	sort.Slice(r.wildcards, func(i, j int) bool {
		a, b := r.wildcards[i].suffix, r.wildcards[j].suffix
		if len(a) != len(b) {
			return len(a) > len(b)
		}
		return a < b
	})
	byPrefix(r.prefixOnly)
	return r
}

// match returns the app for host and path, or nil when none claims them.
// host may carry a port and any letter case.
func (r *router) match(host, path string) *route {
	if len(r.exact) > 0 || len(r.wildcards) > 0 {
		var buf [256]byte
		h := normalizeHost(host, buf[:0])
		if hr := r.exact[string(h)]; hr != nil {
			if rt := hr.match(path); rt != nil {
				return rt
			}
		}
		for _, w := range r.wildcards {
			if len(h) > len(w.suffix) && string(h[len(h)-len(w.suffix):]) == w.suffix {
				if rt := w.routes.match(path); rt != nil {
					return rt
				}
			}
		}
	}
	if rt := matchPrefix(r.prefixOnly, path); rt != nil {
		return rt
	}
	return r.fallback
}

func (hr *hostRoutes) match(path string) *route {
	if rt := matchPrefix(hr.prefixed, path); rt != nil {
		return rt
	}
	return hr.bare
}

// matchPrefix returns the first route (longest prefix first) whose prefix
// claims path: "/api" claims "/api" and "/api/x" but not "/apix".
func matchPrefix(rs []*route, path string) *route {
	for _, rt := range rs {
		if hasPathPrefix(path, rt.prefix) {
			return rt
		}
	}
	return nil
}

func hasPathPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}

// normalizeHost lowercases host and removes its port into dst without
// allocating for ordinary host names.
func normalizeHost(host string, dst []byte) []byte {
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[:i+1]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	if n := len(dst); n > 0 && dst[n-1] == '.' {
		dst = dst[:n-1]
	}
	return dst
}
