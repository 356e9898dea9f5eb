// Package docs holds the documentation's checks: every option the
// configuration parsers accept is in configuration.md, and every relative
// link of README.md and docs/ resolves, anchors included.
package docs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// optionSources are the option parsers: the downstream middleware's
// (internal/config) and the contentcaches middleware's (origin/config*.go).
var optionSources = []string{
	"../downstream/internal/config/*.go",
	"../downstream/origin/config*.go",
}

// parserKeys reads the option names out of the parsers' code: the string
// keys of map literals (the options tables, such as options()) and the
// string labels of the cases of a switch on a key (the keys of nested
// mappings, such as signing's and redis'). Nothing is listed by hand, so an option added to
// a parser is an option this test asks the documentation for.
func parserKeys(t *testing.T) map[string][]string {
	t.Helper()
	keys := map[string][]string{}
	for _, pat := range optionSources {
		files, err := filepath.Glob(pat)
		if err != nil || len(files) == 0 {
			t.Fatalf("no parser files match %s: %v", pat, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			add := func(e ast.Expr, how string) {
				if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
					if s, err := strconv.Unquote(bl.Value); err == nil && s != "" {
						keys[s] = append(keys[s], filepath.Base(f)+" "+how)
					}
				}
			}
			ast.Inspect(af, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.CompositeLit:
					if mt, ok := x.Type.(*ast.MapType); ok {
						if id, ok := mt.Key.(*ast.Ident); ok && id.Name == "string" {
							for _, e := range x.Elts {
								if kv, ok := e.(*ast.KeyValueExpr); ok {
									add(kv.Key, "map key")
								}
							}
						}
					}
				case *ast.SwitchStmt:
					// switch k / switch strings.ToLower(k): a mapping's keys
					// (not, say, a switch on a host name).
					if x.Tag == nil || !mentions(x.Tag, "k", "key") {
						return true
					}
					for _, st := range x.Body.List {
						for _, e := range st.(*ast.CaseClause).List {
							add(e, "case")
						}
					}
				}
				return true
			})
		}
	}
	return keys
}

// mentions tells whether e uses an identifier of one of names.
func mentions(e ast.Expr, names ...string) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && slices.Contains(names, id.Name) {
			found = true
		}
		return !found
	})
	return found
}

// TestEveryOptionDocumented fails for an option the parsers accept that
// configuration.md does not name in a code span (`blobttl`,
// `redis.addr`, `{name, keys}`...).
func TestEveryOptionDocumented(t *testing.T) {
	keys := parserKeys(t)
	// The parsers must yield the options everybody knows: a guard against
	// a refactoring that hides them from this reading.
	for _, k := range []string{"upstreams", "blobttl", "cas", "originhost", "upstreamhosts", "signingkey", "caches"} {
		if _, ok := keys[k]; !ok {
			t.Fatalf("the parsers' code yields no option %q: the test no longer reads them (found %d keys)", k, len(keys))
		}
	}
	spans := map[string]bool{}
	for _, l := range prose(t, "configuration.md") {
		for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(l, -1) {
			for _, w := range regexp.MustCompile(`[A-Za-z0-9_]+`).FindAllString(m[1], -1) {
				spans[w] = true
			}
		}
	}
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !spans[k] {
			t.Errorf("option %q (%s) is not in docs/configuration.md", k, strings.Join(keys[k], ", "))
		}
	}
	t.Logf("%d options documented: %s", len(names), strings.Join(names, " "))
}

var (
	linkRef    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRef = regexp.MustCompile(`^#{1,6} (.*)$`)
)

// markdownFiles are README.md and docs/*.md.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"../README.md"}, files...)
}

// prose returns a file's lines outside code fences.
func prose(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	fence := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			fence = !fence
			continue
		}
		if !fence {
			out = append(out, l)
		}
	}
	return out
}

// slug is GitHub's anchor for a heading.
func slug(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	var b strings.Builder
	for _, r := range h {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, l := range prose(t, path) {
		if m := headingRef.FindStringSubmatch(l); m != nil {
			out[slug(m[1])] = true
		}
	}
	return out
}

// TestLinksResolve fails for a relative link of README.md or docs/*.md to
// a file that does not exist, or to an anchor its Markdown target lacks.
func TestLinksResolve(t *testing.T) {
	checked := 0
	for _, f := range markdownFiles(t) {
		for i, l := range prose(t, f) {
			for _, m := range linkRef.FindAllStringSubmatch(l, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				checked++
				file, anchor, _ := strings.Cut(target, "#")
				path := f
				if file != "" {
					path = filepath.Join(filepath.Dir(f), file)
					if _, err := os.Stat(path); err != nil {
						t.Errorf("%s:%d: link %s: %v", f, i+1, target, err)
						continue
					}
				}
				if anchor != "" && strings.HasSuffix(path, ".md") && !anchors(t, path)[anchor] {
					t.Errorf("%s:%d: link %s: no heading with anchor #%s in %s", f, i+1, target, anchor, path)
				}
			}
		}
	}
	if checked < 30 {
		t.Fatalf("checked %d links: the link reading is broken", checked)
	}
	t.Logf("%d relative links resolve", checked)
}
