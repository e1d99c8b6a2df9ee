package proxy

import (
	"testing"

	"github.com/corral-dev/corral/config"
)

func TestRouterMatch(t *testing.T) {
	app := func(name string, prefix string, strip bool, hosts ...string) *route {
		return &route{name: name, spec: &config.App{Name: name, Hosts: hosts, PathPrefix: prefix}, prefix: prefix, strip: strip}
	}
	r := newRouter([]*route{
		app("default", "", false),
		app("api", "/api", true),
		app("apiv2", "/api/v2", false),
		app("shop", "", false, "shop.example.com"),
		app("shopadmin", "/admin", false, "shop.example.com"),
		app("wild", "", false, "*.example.com"),
		app("deepwild", "", false, "*.eu.example.com"),
		app("wildapi", "/api", false, "*.example.com"),
		app("orgadmin", "/admin", false, "admin.org"),
		app("ported", "", false, "Ported.example.net:8443"),
	})
	cases := []struct{ host, path, want string }{
		{"shop.example.com", "/", "shop"},
		{"SHOP.Example.com:8080", "/x", "shop"},
		{"shop.example.com", "/admin/users", "shopadmin"},
		{"shop.example.com", "/administrator", "shop"},
		{"shop.example.com", "/api/x", "shop"}, // a bare host claim takes all its paths
		{"admin.org", "/admin/x", "orgadmin"},
		{"admin.org", "/api/x", "api"}, // host claimed only under /admin: prefix-only apps next
		{"admin.org", "/x", "default"},
		{"a.example.com", "/", "wild"},
		{"a.example.com", "/api/x", "wildapi"},
		{"a.eu.example.com", "/", "deepwild"},
		{"example.com", "/", "default"}, // "*.example.com" does not claim the bare domain
		{"other.org", "/api", "api"},
		{"other.org", "/api/", "api"},
		{"other.org", "/apix", "default"},
		{"other.org", "/api/v2/users", "apiv2"},
		{"other.org", "/api/v20", "api"},
		{"[::1]:8080", "/", "default"},
		{"ported.example.net", "/", "ported"},
	}
	for _, c := range cases {
		got := r.match(c.host, c.path)
		if got == nil || got.name != c.want {
			name := "<nil>"
			if got != nil {
				name = got.name
			}
			t.Errorf("match(%q, %q) = %s, want %s", c.host, c.path, name, c.want)
		}
	}
}

func TestRouterNoDefaultIs404(t *testing.T) {
	r := newRouter([]*route{{name: "api", spec: &config.App{Name: "api", PathPrefix: "/api"}, prefix: "/api"}})
	if got := r.match("x", "/other"); got != nil {
		t.Fatalf("matched %s, want none", got.name)
	}
}

func TestStrippedPath(t *testing.T) {
	rt := &route{prefix: "/api", strip: true}
	for in, want := range map[string]string{"/api": "/", "/api/": "/", "/api/x": "/x", "/api/x/y": "/x/y"} {
		if got := rt.strippedPath(in); got != want {
			t.Errorf("strip %q = %q, want %q", in, got, want)
		}
	}
	if got := (&route{prefix: "/api"}).strippedPath("/api/x"); got != "/api/x" {
		t.Errorf("no strip: got %q", got)
	}
}

func TestUriPath(t *testing.T) {
	for in, want := range map[string]string{
		"/a/b?x=1":         "/a/b",
		"/":                "/",
		"http://h:1/p/q?z": "/p/q",
		"http://h":         "",
		"/a#frag":          "/a",
		"*":                "*",
	} {
		if got := string(uriPath([]byte(in))); got != want {
			t.Errorf("uriPath(%q) = %q, want %q", in, got, want)
		}
	}
}
