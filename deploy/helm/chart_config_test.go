// Package helm_test checks that the Helm chart's config.yml is one the
// cache accepts: distribution's configuration parser and the downstream
// middleware's own, for the defaults and every values example. The
// chart's Kubernetes objects are checked in deploy/check.
package helm_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"go.yaml.in/yaml/v2"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/testkit"
)

const chart = "content-cache"

// TestChartConfigParses renders the chart with helm template and parses
// each config.yml it writes (one per replica in mode replicated) as the
// cache does at startup. Files the config names under /etc/content-cache/
// (CA bundles, the Redis password) are mounted from Secrets in a pod; here
// they are replaced by files of the test (a CA certificate, a password).
func TestChartConfigParses(t *testing.T) {
	helm, err := exec.LookPath("helm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("helm not found on PATH (CI is set, so not skipping): %v", err)
		}
		t.Skipf("helm not found on PATH; run `make tools` and put .tools/bin on PATH (`make test` does both): %v", err)
	}
	examples, err := filepath.Glob(filepath.Join(chart, "examples", "*.yaml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no values examples: %v", err)
	}
	ca := testkit.NewCA(t)
	password := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(password, []byte("redis-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A file path of the chart's pods, by what it holds.
	local := func(path string) string {
		if strings.Contains(path, "password") {
			return password
		}
		return ca.File
	}
	paths := regexp.MustCompile(`/etc/content-cache/[A-Za-z0-9_./-]+`)

	for _, values := range append([]string{""}, examples...) {
		name := filepath.Base(values)
		args := []string{"template", "cache", chart, "--namespace", "cache-system"}
		if values == "" {
			name = "defaults"
		} else {
			args = append(args, "--values", values)
		}
		t.Run(name, func(t *testing.T) {
			home := t.TempDir()
			cmd := exec.Command(helm, args...)
			cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
			}
			n := 0
			for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
				var cm struct {
					Kind     string
					Metadata struct{ Name string }
					Data     map[string]string
				}
				if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
					t.Fatalf("helm template output: %v", err)
				}
				if cm.Kind != "ConfigMap" || strings.HasSuffix(cm.Metadata.Name, "-hosts-toml") {
					continue
				}
				for key, text := range cm.Data {
					if !strings.HasSuffix(key, ".yml") {
						continue
					}
					n++
					text = paths.ReplaceAllStringFunc(text, local)
					cfg, err := configuration.Parse(bytes.NewReader([]byte(text)))
					if err != nil {
						t.Errorf("%s: distribution's parser: %v\n%s", key, err, text)
						continue
					}
					mws := cfg.Middleware["registry"]
					if len(mws) != 1 || mws[0].Name != "downstream" {
						t.Errorf("%s: registry middleware %+v, want downstream", key, mws)
						continue
					}
					if _, err := downstream.ParseOptions(mws[0].Options); err != nil {
						t.Errorf("%s: the downstream middleware refuses its options: %v\n%s", key, err, text)
					}
				}
			}
			if n == 0 {
				t.Fatal("no config.yml rendered")
			}
		})
	}
}
