package conformance

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// registriesFixture is two registries, A and B, both holding library/app:v1
// (each its own image, real tar layers), and one cache serving both: A as
// the default registry, B as an entry of registries keyed by its host, as
// an image reference names it. Each origin sits behind a counter of the
// GETs it answered with content.
type registriesFixture struct {
	a, b         *regtest.Server
	servedA      *okCounter
	servedB      *okCounter
	hostA, hostB string // the registries' names: the hosts of the counters
	cache        *regtest.Server
	imgA, imgB   regtest.Image
}

func newRegistriesFixture(t *testing.T, image func(seed int64, layers int) regtest.Image) *registriesFixture {
	t.Helper()
	f := &registriesFixture{}
	f.a = regtest.StartOrigin(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}))
	f.b = regtest.StartOrigin(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}))
	var viaA, viaB string
	f.servedA, viaA = startOKCounter(t, f.a.URL)
	f.servedB, viaB = startOKCounter(t, f.b.URL)
	f.hostA, f.hostB = strings.TrimPrefix(viaA, "http://"), strings.TrimPrefix(viaB, "http://")
	f.cache = regtest.StartCache(t, viaA, map[string]any{
		"registries": map[string]any{f.hostB: map[string]any{"upstreams": []any{viaB}}},
	})
	f.imgA, f.imgB = image(2320, 2), image(2321, 3)
	for _, x := range []struct {
		origin *regtest.Server
		img    *regtest.Image
	}{{f.a, &f.imgA}, {f.b, &f.imgB}} {
		x.img.Repo, x.img.Tag = "library/app", "v1"
		if err := regtest.Push(t.Context(), x.origin.URL, "alice", "alice-pw", *x.img); err != nil {
			t.Fatalf("push: %v", err)
		}
	}
	return f
}

// blobs are the registry paths and bytes of img's config and layers.
func blobs(img regtest.Image) map[string][]byte {
	out := map[string][]byte{}
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		out["/v2/"+img.Repo+"/blobs/"+digest.FromBytes(b).String()] = b
	}
	return out
}

// writeHostsDir writes containerd's hosts.toml for each registry, every
// one with the cache as its mirror, and returns the directory.
func writeHostsDir(t *testing.T, cacheURL string, servers map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for host, server := range servers {
		d := filepath.Join(dir, host)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, cacheURL)
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestRegistriesContainerd has containerd's ctr pull library/app:v1 of two
// registries through one cache configured as their mirror in hosts.toml
// (--hosts-dir): each pull reaches the cache with its ns and gets its own
// registry's image (the same repository name at both), and a second pull
// (a fresh containerd) makes no blob GET at either origin.
func TestRegistriesContainerd(t *testing.T) {
	c := newTool(t, "ctr")
	f := newRegistriesFixture(t, regtest.TarImage)
	hosts := writeHostsDir(t, f.cache.URL, map[string]string{f.hostA: "http://" + f.hostA, f.hostB: "http://" + f.hostB})
	type pulled struct {
		host   string
		img    regtest.Image
		served *okCounter
	}
	regs := []pulled{{f.hostA, f.imgA, f.servedA}, {f.hostB, f.imgB, f.servedB}}
	cold := map[string]int{}
	for round := range 2 {
		sock := startContainerd(t)
		for _, r := range regs {
			ref := r.host + "/library/app:v1"
			cacheBefore := f.cache.Counts.Snapshot()
			c.run(t, "--address", sock, "-n", "cc", "images", "pull", "--hosts-dir", hosts, "--user", "alice:alice-pw",
				"--snapshotter", "native", ref)
			// The image is this registry's own: its manifest digest, and
			// every blob's bytes from containerd's content store.
			out := string(c.run(t, "--address", sock, "-n", "cc", "images", "ls", "--quiet"))
			if !strings.Contains(out, ref) {
				t.Fatalf("round %d: ctr images ls %q lacks %s", round, out, ref)
			}
			wantBytes(t, "manifest of "+ref, c.run(t, "--address", sock, "-n", "cc", "content", "get", r.img.Digest.String()), r.img.Manifest)
			for p, b := range blobs(r.img) {
				d := p[strings.LastIndex(p, "/")+1:]
				wantBytes(t, fmt.Sprintf("round %d: %s of %s", round, d, ref), c.run(t, "--address", sock, "-n", "cc", "content", "get", d), b)
				// Through the cache: it answered the GET, and the origin
				// served it once, cold.
				if f.cache.Counts.Get(http.MethodGet, p) <= cacheBefore["GET "+p] {
					t.Errorf("round %d: %s: no GET of %s reached the cache", round, ref, p)
				}
				n := r.served.get(p)
				if round == 0 {
					cold[r.host+p] = n
					if n != 1 {
						t.Errorf("cold pull of %s: the origin served %d GETs of %s, want 1", ref, n, p)
					}
				} else if n != cold[r.host+p] {
					t.Errorf("warm pull of %s: the origin served %d more GETs of %s, want 0", ref, n-cold[r.host+p], p)
				}
			}
		}
	}
	// Each registry's requests were counted as its own: ns reached the
	// cache (without it B's pull would have been the default registry's).
	all := gather(t, f.cache)
	for _, h := range []string{f.hostA, f.hostB} {
		if n := all[`content_cache_requests_total{kind="blob",registry="`+h+`",result="hit"}`]; n == 0 {
			t.Errorf("no blob hit counted for registry %s", h)
		}
	}
}

// gather returns the cache's metrics as "name{label="value",...}" (labels
// in name order) → value.
func gather(t *testing.T, s *regtest.Server) map[string]float64 {
	t.Helper()
	mfs, err := s.Cache.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			sort.Strings(labels)
			out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}
