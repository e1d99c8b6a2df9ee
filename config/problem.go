package config

import (
	"fmt"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Problem is one thing wrong with a config file, located by file, line,
// column and dotted key.
type Problem struct {
	// File is the config file's name as given to Load or Parse.
	File string
	// Line and Column locate the value at fault, or the block it belongs in
	// when the value is missing; both start at 1.
	Line, Column int
	// Key is the dotted path of the setting at fault ("app.web.health.interval");
	// empty when the problem is not about one setting (a syntax error).
	Key     string
	Message string
}

// String formats the problem the way compilers do, so editors can jump to it.
func (p Problem) String() string {
	if p.Key == "" {
		return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Column, p.Message)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", p.File, p.Line, p.Column, p.Key, p.Message)
}

// Problems is the error Load returns for an invalid config: every problem
// found, in file order.
type Problems []Problem

// Error lists every problem, one per line.
func (p Problems) Error() string {
	lines := make([]string, len(p))
	for i, problem := range p {
		lines[i] = problem.String()
	}
	return strings.Join(lines, "\n")
}

// checker collects problems while a raw file is turned into a Config, so that
// one pass reports everything wrong instead of stopping at the first.
type checker struct {
	file     string
	problems Problems
	// failed holds keys whose value hcl could not decode; later checks on the
	// zero value left behind would only repeat the same problem.
	failed map[string]bool
	// reported holds keys with a problem, so that checks across several
	// keys do not judge a value that was already rejected.
	reported map[string]bool
}

func newChecker(file string) *checker {
	return &checker{file: file, failed: map[string]bool{}, reported: map[string]bool{}}
}

// fine reports whether none of the keys has a problem yet.
func (c *checker) fine(keys ...string) bool {
	for _, key := range keys {
		if c.failed[key] || c.reported[key] {
			return false
		}
	}
	return true
}

// bad records a problem with the value of attribute name of n.
func (c *checker) bad(n node, name, format string, args ...any) {
	c.add(n.sub(name), n.rangeOf(name), format, args...)
}

// badItem records a problem with element i of the list attribute name of n.
func (c *checker) badItem(n node, name string, i int, format string, args ...any) {
	c.add(n.sub(name), n.itemRange(name, i), format, args...)
}

// badKey records a problem with entry key of the map attribute name of n.
func (c *checker) badKey(n node, name, key, format string, args ...any) {
	c.add(n.sub(name), n.keyRange(name, key), format, args...)
}

// add records a problem for key at rng.
func (c *checker) add(key string, rng hcl.Range, format string, args ...any) {
	if c.failed[key] {
		return
	}
	c.reported[key] = true
	c.problems = append(c.problems, Problem{
		File:    c.file,
		Line:    rng.Start.Line,
		Column:  rng.Start.Column,
		Key:     key,
		Message: fmt.Sprintf(format, args...),
	})
}

// diagnostics turns hcl diagnostics into problems; body (nil after a syntax
// error) is used to name the key each diagnostic points into.
func (c *checker) diagnostics(diags hcl.Diagnostics, body *hclsyntax.Body) {
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		p := Problem{File: c.file, Line: 1, Column: 1, Message: diagnosticMessage(d)}
		if d.Subject != nil {
			p.File = d.Subject.Filename
			p.Line, p.Column = d.Subject.Start.Line, d.Subject.Start.Column
			if body != nil {
				p.Key = keyAt(body, "", d.Subject.Start.Byte)
			}
		}
		if p.Key != "" {
			c.failed[p.Key] = true
		}
		c.problems = append(c.problems, p)
	}
}

// sorted returns the problems in file order.
func (c *checker) sorted() Problems {
	sort.SliceStable(c.problems, func(i, j int) bool {
		a, b := c.problems[i], c.problems[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return c.problems
}

// diagnosticMessage turns hcl's sentence-case summary and detail into one
// lowercase message in the style of the rest of corral's errors.
func diagnosticMessage(d *hcl.Diagnostic) string {
	msg := lowerFirst(d.Summary)
	if d.Summary == "Unsuitable value type" {
		// gohcl repeats itself here ("Unsuitable value: a number is required").
		return "wrong type: " + strings.TrimPrefix(d.Detail, "Unsuitable value: ")
	}
	if d.Detail != "" {
		msg += ": " + lowerFirst(strings.TrimSuffix(d.Detail, "."))
	}
	return msg
}

func lowerFirst(s string) string {
	r, size := utf8.DecodeRuneInString(s)
	if size == 0 {
		return s
	}
	// Keep acronyms ("HCL") intact: lower only a capital that starts a word.
	next, _ := utf8.DecodeRuneInString(s[size:])
	if unicode.IsUpper(next) {
		return s
	}
	return string(unicode.ToLower(r)) + s[size:]
}

// keyAt names the innermost attribute or block of body that contains the
// byte offset, as a dotted key below prefix.
func keyAt(body *hclsyntax.Body, prefix string, offset int) string {
	for name, attr := range body.Attributes {
		if attr.SrcRange.ContainsOffset(offset) {
			return join(prefix, name)
		}
	}
	for _, block := range body.Blocks {
		if block.Range().ContainsOffset(offset) {
			return keyAt(block.Body, blockKey(prefix, block), offset)
		}
	}
	return prefix
}

// blockKey is the dotted key of block below prefix: its type, then its labels.
func blockKey(prefix string, block *hclsyntax.Block) string {
	key := join(prefix, block.Type)
	for _, label := range block.Labels {
		key = join(key, label)
	}
	return key
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// node is a block of the syntax tree, used to give each problem its dotted
// key and the source position of the value at fault.
type node struct {
	key string
	// body is nil when the block is absent from the file.
	body *hclsyntax.Body
	// at is where problems about the block itself point: its definition,
	// or the enclosing block's when it is absent.
	at hcl.Range
}

func rootNode(body *hclsyntax.Body) node {
	start := hcl.Range{Filename: body.SrcRange.Filename, Start: hcl.InitialPos, End: hcl.InitialPos}
	return node{body: body, at: start}
}

// sub returns the key of the attribute name inside the block.
func (n node) sub(name string) string {
	return join(n.key, name)
}

// rangeOf is the range of the value of attribute name, or the block's own
// position when the attribute is absent (a default or a missing value).
func (n node) rangeOf(name string) hcl.Range {
	if n.body != nil {
		if attr, ok := n.body.Attributes[name]; ok {
			return attr.Expr.Range()
		}
	}
	return n.at
}

// child returns the first nested block of type typ.
func (n node) child(typ string) node {
	if n.body != nil {
		for _, block := range n.body.Blocks {
			if block.Type == typ {
				return node{key: blockKey(n.key, block), body: block.Body, at: block.DefRange()}
			}
		}
	}
	return node{key: join(n.key, typ), at: n.at}
}

// blockAt returns the nested block defined at def (blocks are matched by
// position because labels may repeat).
func (n node) blockAt(def hcl.Range) node {
	for _, block := range n.body.Blocks {
		if block.DefRange() == def {
			return node{key: blockKey(n.key, block), body: block.Body, at: def}
		}
	}
	return node{key: n.key, at: def}
}

// itemRange is the range of element i of a list attribute, or of the whole
// value when it is not written as a list literal.
func (n node) itemRange(name string, i int) hcl.Range {
	if n.body != nil {
		if attr, ok := n.body.Attributes[name]; ok {
			if tuple, ok := attr.Expr.(*hclsyntax.TupleConsExpr); ok && i < len(tuple.Exprs) {
				return tuple.Exprs[i].Range()
			}
		}
	}
	return n.rangeOf(name)
}

// keyRange is the range of the entry with the given key in a map attribute,
// or of the whole value when the entry cannot be found.
func (n node) keyRange(name, key string) hcl.Range {
	if n.body != nil {
		if attr, ok := n.body.Attributes[name]; ok {
			if object, ok := attr.Expr.(*hclsyntax.ObjectConsExpr); ok {
				for _, item := range object.Items {
					v, diags := item.KeyExpr.Value(nil)
					if !diags.HasErrors() && v.Type() == cty.String && v.IsKnown() && v.AsString() == key {
						return item.KeyExpr.Range()
					}
				}
			}
		}
	}
	return n.rangeOf(name)
}
