package config

import (
	"errors"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// The checker methods below each turn one raw value into its final form:
// absent values get their default, bad values are reported at the value's
// position under the key n.sub(name) and replaced by the default, so that
// later checks do not report the same mistake again.

func (c *checker) duration(n node, name string, p *string, def time.Duration) time.Duration {
	if p == nil {
		return def
	}
	d, err := time.ParseDuration(*p)
	switch {
	case err != nil:
		c.bad(n, name, "must be a duration like \"2s\", got %q", *p)
		return def
	case d < 0:
		c.bad(n, name, "must not be negative, got %q", *p)
		return def
	}
	return d
}

// positive reports a duration that was set to zero where zero makes no sense.
func (c *checker) positive(n node, name string, d time.Duration) {
	if d <= 0 {
		c.bad(n, name, "must be greater than 0")
	}
}

func (c *checker) intIn(n node, name string, p *int, def, lo, hi int) int {
	if p == nil {
		return def
	}
	if *p < lo || *p > hi {
		c.bad(n, name, "must be between %d and %d, got %d", lo, hi, *p)
		return def
	}
	return *p
}

func (c *checker) oneOf(n node, name string, p *string, def string, allowed ...string) string {
	if p == nil {
		return def
	}
	if !slices.Contains(allowed, *p) {
		c.bad(n, name, "must be one of %s; got %q", strings.Join(allowed, ", "), *p)
		return def
	}
	return *p
}

// address checks a host:port listen address; allowEmpty permits "" (disabled).
func (c *checker) address(n node, name string, p *string, def string, allowEmpty bool) string {
	if p == nil {
		return def
	}
	if *p == "" && allowEmpty {
		return ""
	}
	_, port, err := net.SplitHostPort(*p)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		c.bad(n, name, "must be host:port like \"127.0.0.1:8080\", got %q", *p)
		return def
	}
	return *p
}

func (c *checker) portRange(n node, name string, p *string, def PortRange) PortRange {
	if p == nil {
		return def
	}
	first, last, ok := strings.Cut(*p, "-")
	f, err1 := strconv.Atoi(strings.TrimSpace(first))
	l, err2 := strconv.Atoi(strings.TrimSpace(last))
	switch {
	case !ok || err1 != nil || err2 != nil:
		c.bad(n, name, "must be a port range like \"20000-29999\", got %q", *p)
	case f < 1024 || l > 65535:
		c.bad(n, name, "must lie within 1024-65535, got %q", *p)
	case f > l:
		c.bad(n, name, "first port must not exceed the last, got %q", *p)
	default:
		return PortRange{First: f, Last: l}
	}
	return def
}

// size reads a byte count given as a number or as a string like "10MiB".
func (c *checker) size(n node, name string, expr hcl.Expression) int64 {
	if expr == nil {
		return 0
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		c.bad(n, name, "%s", diagnosticMessage(diags[0]))
		return 0
	}
	switch {
	case v.IsNull():
		return 0
	case v.Type() == cty.Number && v.IsKnown():
		f := v.AsBigFloat()
		if i, acc := f.Int64(); f.IsInt() && acc == 0 && i >= 0 {
			return i
		}
	case v.Type() == cty.String && v.IsKnown():
		if b, ok := parseSize(v.AsString()); ok {
			return b
		}
	}
	c.bad(n, name, "must be a byte count or a size like \"10MiB\", \"512KB\", \"1GB\"")
	return 0
}

// sizeOr is size with a default for an absent key.
func (c *checker) sizeOr(n node, name string, expr hcl.Expression, def int64) int64 {
	if expr == nil {
		return def
	}
	if v, diags := expr.Value(nil); !diags.HasErrors() && v.IsNull() {
		return def
	}
	return c.size(n, name, expr)
}

var sizePattern = regexp.MustCompile(`^\s*(\d+)\s*([A-Za-z]*)\s*$`)

// sizeUnits follows the SI/IEC convention: KB is 1000 bytes, KiB is 1024.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

func parseSize(s string) (int64, bool) {
	m := sizePattern.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, false
	}
	count, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || count > math.MaxInt64/unit {
		return 0, false
	}
	return count * unit, true
}

// prefixes reads CIDRs; a bare IP stands for itself alone.
func (c *checker) prefixes(n node, name string, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		c.badItem(n, name, i, "must hold CIDRs or IP addresses, got %q", s)
	}
	return out
}

// existingFile resolves a required path against base and checks the file exists.
func (c *checker) existingFile(n node, name string, p *string, base string) string {
	if p == nil {
		c.add(n.sub(name), n.at, "is required")
		return ""
	}
	path := absPath(*p, base)
	c.exists(n, name, path, false)
	return path
}

// dir resolves the working directory against base (the default) and checks it exists.
func (c *checker) dir(n node, name string, p *string, base string) string {
	path := absPath(valueOr(p, "."), base)
	c.exists(n, name, path, true)
	return path
}

// exists checks that path is there and is a directory or a file as wanted.
func (c *checker) exists(n node, name, path string, wantDir bool) {
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.bad(n, name, "%q does not exist", path)
	case err != nil:
		c.bad(n, name, "cannot use %q: %v", path, err)
	case wantDir && !info.IsDir():
		c.bad(n, name, "%q is not a directory", path)
	case !wantDir && info.IsDir():
		c.bad(n, name, "%q is a directory, not a file", path)
	}
}

func absPath(p, base string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

func absPaths(list []string, base string) []string {
	var out []string
	for _, p := range list {
		out = append(out, absPath(p, base))
	}
	return out
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv are set by corral for every worker.
var reservedEnv = []string{"PORT", "CORRAL_APP", "CORRAL_WORKER"}

// env checks variable names; the result is never nil so that two configs
// without env compare equal.
func (c *checker) env(n node, name string, m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // problems in a stable order
	for _, k := range keys {
		switch {
		case !envName.MatchString(k):
			c.badKey(n, name, k, "%q is not a valid environment variable name", k)
		case slices.Contains(reservedEnv, k):
			c.badKey(n, name, k, "%q is set by corral for each worker and cannot be overridden", k)
		default:
			out[k] = m[k]
		}
	}
	return out
}

var signals = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "HUP": syscall.SIGHUP,
	"USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2, "KILL": syscall.SIGKILL, "WINCH": syscall.SIGWINCH,
}

func (c *checker) signal(n node, name string, p *string) syscall.Signal {
	if p == nil {
		return syscall.SIGTERM
	}
	if sig, ok := signals[strings.TrimPrefix(strings.ToUpper(*p), "SIG")]; ok {
		return sig
	}
	c.bad(n, name, "must be one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL, SIGWINCH; got %q", *p)
	return syscall.SIGTERM
}

var hostLabel = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$`)

// hosts lowercases host names and checks that a wildcard is only a leading "*.".
func (c *checker) hosts(n node, name string, list []string) []string {
	var out []string
	for i, h := range list {
		h = strings.ToLower(strings.TrimSpace(h))
		bare := strings.TrimPrefix(h, "*.")
		switch {
		case strings.Contains(bare, "*"):
			c.badItem(n, name, i, "%q: a wildcard is allowed only as a leading \"*.\"", h)
		case strings.Contains(bare, ":"):
			c.badItem(n, name, i, "%q: must be a host name without a port", h)
		case !validHostName(bare):
			c.badItem(n, name, i, "%q is not a valid host name", h)
		default:
			out = append(out, h)
		}
	}
	return out
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if !hostLabel.MatchString(label) {
			return false
		}
	}
	return true
}

// pathPrefix checks and normalises a prefix: "/api/" claims the same as "/api".
func (c *checker) pathPrefix(n node, name string, p *string) string {
	if p == nil || *p == "" {
		return ""
	}
	if (*p)[0] != '/' || strings.ContainsAny(*p, "?# \t") {
		c.bad(n, name, "must be a URL path starting with \"/\", got %q", *p)
		return ""
	}
	if trimmed := strings.TrimRight(*p, "/"); trimmed != "" {
		return trimmed
	}
	return "/"
}

var cookieToken = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_` + "`" + `|~-]+$`)

func (c *checker) cookieName(n node, name string, p *string) string {
	if p == nil {
		return "corral_sticky"
	}
	if !cookieToken.MatchString(*p) {
		c.bad(n, name, "must be a valid cookie name, got %q", *p)
		return "corral_sticky"
	}
	return *p
}

var appName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func validName(s string) bool {
	return appName.MatchString(s)
}
