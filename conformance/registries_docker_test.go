package conformance

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// hubACL imitates Docker Hub: anyone may pull library/*; alice may do
// anything.
func hubACL(user, repo string) []string {
	switch {
	case user == "alice":
		return []string{"*"}
	case strings.HasPrefix(repo, "library/"):
		return []string{"pull"}
	}
	return nil
}

// TestRegistriesDockerMirror has a real Docker engine use the cache as its
// registry-mirrors entry. The cache's default registry is a local registry
// posing as Docker Hub, behind a token server imitating auth.docker.io
// (service registry.docker.io), so the test runs offline: `docker pull
// library/app:v1` can only succeed through the mirror (Docker Hub itself
// is unreachable), and dockerd sends it no ns. Cold, then warm after
// `docker rmi`: the warm pull makes no blob GET at the origin. Then `docker
// login` at the cache's address and a pull of a private image through it,
// cold then warm.
func TestRegistriesDockerMirror(t *testing.T) {
	ts := regtest.NewTokenServer(t, tokenUsers, hubACL)
	ts.Service = "registry.docker.io"
	hub := regtest.StartOrigin(t, ts.AuthConfig())
	served, via := startOKCounter(t, hub.URL)
	cache := regtest.StartCache(t, via, nil)
	public := regtest.TarImage(2330, 2)
	public.Repo, public.Tag = "library/app", "v1"
	private := regtest.TarImage(2331, 2)
	private.Repo, private.Tag = "private/app", "v1"
	for _, img := range []regtest.Image{public, private} {
		if err := regtest.Push(t.Context(), hub.URL, "alice", "alice-pw", img); err != nil {
			t.Fatalf("push %s: %v", img.Repo, err)
		}
	}
	e := startDockerdMirrors(t, cache.URL)
	d := newDocker(t, e)
	pullTwice := func(ref string, img regtest.Image) {
		t.Helper()
		f := &dockerFixture{cache: cache, img: img}
		cold := map[string]int{}
		for round, what := range []string{"cold", "warm"} {
			before := map[string]int{}
			for _, p := range f.blobPaths() {
				before[p] = cache.Counts.Get("GET", p)
			}
			start := time.Now()
			d.run(t, "pull", ref)
			t.Logf("%s pull of %s: %v", what, ref, time.Since(start).Round(time.Millisecond))
			out := string(d.run(t, "image", "inspect", "--format", "{{.Id}}", ref))
			if want := digest.FromBytes(img.Config).String(); strings.TrimSpace(out) != want {
				t.Errorf("%s pull of %s: image ID %q, want the config's %s", what, ref, out, want)
			}
			for _, p := range f.blobPaths() {
				if cache.Counts.Get("GET", p) <= before[p] {
					t.Errorf("%s pull of %s: dockerd sent the cache no GET of %s", what, ref, p)
				}
				n := served.get(p)
				if round == 0 {
					cold[p] = n
					if n != 1 {
						t.Errorf("cold pull of %s: the origin served %d GETs of %s, want 1", ref, n, p)
					}
				} else if n != cold[p] {
					t.Errorf("warm pull of %s: the origin served %d more GETs of %s, want 0", ref, n-cold[p], p)
				}
			}
			d.run(t, "rmi", ref)
		}
	}
	// registry-mirrors: a Docker Hub image, anonymously (the imitation
	// hub's token realm grants library/* to anyone).
	pullTwice("library/app:v1", public)
	// The cache's own address, with docker login.
	d.runStdin(t, "alice-pw", "login", cache.Host, "-u", "alice", "--password-stdin")
	pullTwice(cache.Host+"/private/app:v1", private)
}
