package check

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// repoRoot is the repository, two levels up from this module.
const repoRoot = "../.."

// loadCompose loads a compose or stack file with the compose-spec loader:
// the schema is checked (an unknown or misplaced key is refused), and so
// is the project's consistency (services naming configs, secrets, volumes
// and networks that exist).
func loadCompose(t *testing.T, path string) (*types.Project, error) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(abs)
	if err != nil {
		t.Fatal(err)
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: b}},
		Environment: types.Mapping{},
	}
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("content-cache", true)
	})
}

// stackFiles are the swarm stacks in configs/: the single cache's and the
// replicated one's when it is there.
func stackFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "configs", "docker-stack*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no configs/docker-stack*.yml: %v", err)
	}
	return files
}

// TestSchemaRefusesUnknownKeys shows the schema check bites: a stack with
// a misspelt key must not load.
func TestSchemaRefusesUnknownKeys(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	const stack = "services:\n  cache:\n    image: content-cache\n    deploy:\n      placment:\n        constraints: [node.labels.content-cache == true]\n"
	if err := os.WriteFile(bad, []byte(stack), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadCompose(t, bad)
	if err == nil || !strings.Contains(err.Error(), "placment") {
		t.Fatalf("a stack with deploy.placment loaded: err = %v, want the schema's refusal naming it", err)
	}
}

// TestStacks loads each swarm stack of configs/ with the compose-spec
// schema, checks that its content-cache services have what the MSR/DTR
// stack (seeds 001, 002) has: port 443 published (by one of them, or by the
// balancer in front of them), a
// placement constraint on a node label, the config and the TLS secrets
// mounted, the restart policy. With a docker CLI that has
// `docker stack config` (docker 23 and later; Debian's 20.10 has not), it
// also has docker's own swarm loader check it.
func TestStacks(t *testing.T) {
	for _, file := range stackFiles(t) {
		t.Run(filepath.Base(file), func(t *testing.T) {
			p, err := loadCompose(t, file)
			if err != nil {
				t.Fatalf("compose-spec loader: %v", err)
			}
			if len(p.Services) == 0 {
				t.Fatal("no services")
			}
			var published, placed, tls, config bool
			caches := 0
			for name, s := range p.Services {
				// Port 443: a cache's, or the balancer's in front of the
				// caches (configs/docker-stack-replicated.yml).
				for _, port := range s.Ports {
					published = published || port.Published == "443"
				}
				// The caches; a stack may have others (Redis, a balancer).
				if !strings.Contains(s.Image, "content-cache") {
					continue
				}
				caches++
				if s.Deploy == nil {
					t.Errorf("service %s: no deploy section", name)
					continue
				}
				for _, c := range s.Deploy.Placement.Constraints {
					placed = placed || strings.HasPrefix(c, "node.labels.")
				}
				if s.Deploy.RestartPolicy == nil {
					t.Errorf("service %s: no restart policy", name)
				}
				for _, sec := range s.Secrets {
					tls = tls || strings.HasSuffix(sec.Source, ".key.pem")
				}
				config = config || len(s.Configs) > 0
			}
			if caches == 0 {
				t.Fatalf("no service runs a content-cache image")
			}
			if !published || !placed || !tls || !config {
				t.Errorf("port 443 published %v, placement on a node label %v, a TLS key secret %v, a config %v: want all",
					published, placed, tls, config)
			}
			dockerStackConfig(t, file)
		})
	}
}

// dockerStackConfig runs `docker stack config` on a copy of the stack with
// placeholder files for its configs and secrets, if the CLI has it.
func dockerStackConfig(t *testing.T, file string) {
	t.Helper()
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Logf("no docker CLI: only the compose-spec schema checked")
		return
	}
	if out, err := exec.Command(docker, "stack", "config", "--help").CombinedOutput(); err != nil || !bytes.Contains(out, []byte("final config")) {
		t.Logf("%s has no `docker stack config`: only the compose-spec schema checked", docker)
		return
	}
	dir := t.TempDir()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "docker-stack.yml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := loadCompose(t, file)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, c := range p.Configs {
		files = append(files, c.File)
	}
	for _, s := range p.Secrets {
		files = append(files, s.File)
	}
	for _, f := range files {
		rel, err := filepath.Rel(filepath.Dir(mustAbs(t, file)), f)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("stack file %s outside the stack's directory", f)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, rel), []byte("placeholder\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(docker, "stack", "config", "--compose-file", "docker-stack.yml")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+filepath.Join(dir, "no-engine.sock"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker stack config: %v\n%s", err, out)
	}
	t.Logf("docker stack config: ok (%d bytes)", len(out))
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestComposeFile loads docker-compose.yml (origin and cache for a first
// try) and checks the files it names exist: its configs and the build's
// Dockerfile.
func TestComposeFile(t *testing.T) {
	p, err := loadCompose(t, filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("compose-spec loader: %v", err)
	}
	names := p.ServiceNames()
	slices.Sort(names)
	if !slices.Equal(names, []string{"cache", "origin"}) {
		t.Errorf("services %v, want cache and origin", names)
	}
	for name, c := range p.Configs {
		if _, err := os.Stat(c.File); err != nil {
			t.Errorf("config %s: %v", name, err)
		}
	}
	for name, s := range p.Services {
		if s.Build == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(s.Build.Context, "Dockerfile")); err != nil {
			t.Errorf("service %s builds from %s: %v", name, s.Build.Context, err)
		}
	}
	cache, err := os.ReadFile(filepath.Join(repoRoot, "configs", "compose-cache.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cache, []byte("originhost: http://origin:5000")) {
		t.Errorf("configs/compose-cache.yml does not name the compose service origin as its origin")
	}
}
