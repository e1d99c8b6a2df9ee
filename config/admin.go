package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// minTokenLength is the shortest admin token accepted: a token guards
// restarts and reloads from anyone who can reach the port, so it must not
// be guessable ("openssl rand -hex 32" gives 64 characters).
const minTokenLength = 16

// adminAccess reads admin.token, admin.token_file and admin.hosts into a.
// The token file is read here, at every load, so a reload picks up a
// rotated token; its trailing newline (what echo and editors add) is
// trimmed.
func (c *checker) adminAccess(n node, r rawAdmin, a *Admin, base string) {
	a.Hosts = c.hosts(n, "hosts", r.Hosts)
	switch {
	case r.Token != nil && r.TokenFile != nil:
		c.bad(n, "token_file", "set either token or token_file, not both")
	case r.Token != nil:
		a.Token = c.token(n, "token", *r.Token, "")
	case r.TokenFile != nil:
		a.TokenFile = absPath(*r.TokenFile, base)
		data, err := os.ReadFile(a.TokenFile)
		if err != nil {
			c.bad(n, "token_file", "cannot read the token: %v", err)
			return
		}
		a.Token = c.token(n, "token_file", strings.TrimRight(string(data), "\r\n"), " in "+a.TokenFile)
	}
}

// token checks a bearer token with CheckToken. where names the file it
// came from, if any.
func (c *checker) token(n node, name, tok, where string) string {
	if err := CheckToken(tok); err != nil {
		c.bad(n, name, "the token%s %v", where, err)
		return ""
	}
	return tok
}

// CheckToken says what is wrong with an admin token, if anything: it must
// be long enough not to be guessed, and hold only characters that travel
// in an Authorization header unchanged.
func CheckToken(tok string) error {
	if len(tok) < minTokenLength {
		return fmt.Errorf("must be at least %d characters (try: openssl rand -hex 32)", minTokenLength)
	}
	for _, b := range []byte(tok) {
		if b < 0x21 || b > 0x7e {
			return errors.New("must be printable ASCII without spaces")
		}
	}
	return nil
}
