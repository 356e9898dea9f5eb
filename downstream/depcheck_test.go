package downstream_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The middleware pulls in nothing that distribution's registry does not
// pull in already, besides its own packages: a fork that imports it gets
// the feature without a new dependency (in the spirit of
// go-containerregistry's depcheck_test.go).
func TestDependencies(t *testing.T) {
	deps := func(pkg string) []string {
		t.Helper()
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	distribution := deps("github.com/distribution/distribution/v3/registry")
	var extra []string
	for _, d := range deps("github.com/content-cache/content-cache/downstream") {
		if !strings.HasPrefix(d, "github.com/content-cache/content-cache/downstream") && !slices.Contains(distribution, d) {
			extra = append(extra, d)
		}
	}
	if len(extra) > 0 {
		t.Fatalf("downstream depends on packages distribution's registry does not: %v", extra)
	}
}
