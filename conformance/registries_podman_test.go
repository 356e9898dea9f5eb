package conformance

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestRegistriesPodman has podman (Debian's 4.3, as root, vfs storage of
// its own) pull library/app:v1 of two registries through one cache, each
// registry's registries.conf entry with the cache as its mirror. Podman
// 4.3 sends no ns: registry A is the cache's default registry, and B's
// mirror location carries B's path prefix (its stored name). Each pull
// gets its registry's own image; after `podman rmi`, a second pull makes no
// blob GET at either origin.
func TestRegistriesPodman(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("podman with its own --root needs root, running as uid %d (CI is set, so not skipping)", os.Geteuid())
		}
		t.Skipf("podman with its own --root needs root, running as uid %d", os.Geteuid())
	}
	p := newTool(t, "podman")
	// podman reads DOCKER_CONFIG's config.json (the tool's own, empty).
	for _, kv := range p.env {
		if v, ok := strings.CutPrefix(kv, "DOCKER_CONFIG="); ok {
			if err := os.MkdirAll(v, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(v, "config.json"), []byte("{}"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	f := newRegistriesFixture(t, regtest.TarImage)
	dir := t.TempDir()
	cacheHost := strings.TrimPrefix(f.cache.URL, "http://")
	conf := fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
location = %q
insecure = true
[[registry.mirror]]
location = %q
insecure = true

[[registry]]
location = %q
insecure = true
[[registry.mirror]]
location = %q
insecure = true
`, f.hostA, cacheHost, f.hostB, cacheHost+"/"+strings.ReplaceAll(f.hostB, ":", "_"))
	confPath := filepath.Join(dir, "registries.conf")
	policy := filepath.Join(dir, "policy.json")
	// podman sends a mirror the credentials stored for the mirror's host
	// (podman login), not --creds: alice's, for the cache.
	authFile := filepath.Join(dir, "auth.json")
	auth := base64.StdEncoding.EncodeToString([]byte("alice:alice-pw"))
	authJSON := fmt.Sprintf(`{"auths":{%q:{"auth":%q},%q:{"auth":%q},%q:{"auth":%q}}}`, cacheHost, auth, f.hostA, auth, f.hostB, auth)
	for path, data := range map[string]string{confPath: conf, authFile: authJSON, policy: `{"default":[{"type":"insecureAcceptAnything"}]}`} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(dir, "root")
	t.Cleanup(func() { unmountUnder(t, root) })
	global := []string{"--root", root, "--runroot", filepath.Join(dir, "run"), "--storage-driver", "vfs",
		"--registries-conf", confPath, "--events-backend", "file", "--cgroup-manager", "cgroupfs"}
	type pulled struct {
		host   string
		img    regtest.Image
		served *okCounter
	}
	cold := map[string]int{}
	for round, what := range []string{"cold", "warm"} {
		for _, r := range []pulled{{f.hostA, f.imgA, f.servedA}, {f.hostB, f.imgB, f.servedB}} {
			ref := r.host + "/library/app:v1"
			before := f.cache.Counts.Snapshot()
			r0 := p.exec(t, "", append(global, "--log-level", "debug", "pull", "--signature-policy", policy, "--authfile", authFile, ref)...)
			if r0.err != nil {
				t.Fatalf("podman pull %s: %v\n%s", ref, r0.err, r0.output)
			}
			if strings.Contains(r0.output, "Accessing \""+cacheHost) && strings.Contains(r0.output, "failed") {
				t.Errorf("%s pull of %s: podman's mirror attempt failed:\n%s", what, ref, r0.output)
			}
			id := strings.TrimSpace(string(p.run(t, append(global, "image", "inspect", "--format", "{{.Id}}", ref)...)))
			if want := digest.FromBytes(r.img.Config).Encoded(); id != want {
				t.Errorf("%s pull of %s: image ID %q, want its registry's config %s", what, ref, id, want)
			}
			for path := range blobs(r.img) {
				storedPath := path
				if r.host == f.hostB {
					storedPath = "/v2/" + strings.ReplaceAll(f.hostB, ":", "_") + strings.TrimPrefix(path, "/v2")
				}
				if f.cache.Counts.Get(http.MethodGet, storedPath) <= before["GET "+storedPath] {
					t.Errorf("%s pull of %s: no GET of %s reached the cache", what, ref, storedPath)
				}
				n := r.served.get(path)
				if round == 0 {
					cold[r.host+path] = n
					if n != 1 {
						t.Errorf("cold pull of %s: the origin served %d GETs of %s, want 1", ref, n, path)
					}
				} else if n != cold[r.host+path] {
					t.Errorf("warm pull of %s: the origin served %d more GETs of %s, want 0", ref, n-cold[r.host+path], path)
				}
			}
			p.run(t, append(global, "rmi", ref)...)
		}
	}
}
