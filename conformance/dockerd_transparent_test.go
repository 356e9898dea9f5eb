package conformance

import (
	"context"
	"testing"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestDockerdTransparent has a real Docker engine log in to the origin and
// pull from the origin's address as alice, who is assigned to a cache:
// manifests from the origin, every blob byte from the cache (fetched from
// the origin once, with the signature), nothing from the origin on the
// warm pull after `docker rmi`, and the cache's log shows the hits. Then
// the cache dies: after the origin's next probe the pull is served by the
// origin directly.
func TestDockerdTransparent(t *testing.T) {
	e := startDockerd(t)
	for _, kind := range dockerKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			f := newTransparentFixture(t, kind.name, kind.image(kind.seed+1, 3))
			// checkDockerImage looks the image up by the address pulled from.
			df := &dockerFixture{cache: &regtest.Server{Host: f.originHost}, img: f.img}
			d := newDocker(t, e)
			d.runStdin(t, "alice-pw", "login", f.originHost, "-u", "alice", "--password-stdin")

			d.run(t, "pull", f.ref())
			checkDockerImage(t, d, df)
			f.checkCounts(t, "cold pull", 1)

			d.run(t, "rmi", f.ref())
			d.run(t, "pull", f.ref())
			checkDockerImage(t, d, df)
			f.checkCounts(t, "warm pull", 1)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			for _, p := range f.blobPaths() {
				if _, err := f.cacheLog.WaitFor(ctx, "result=hit", p[len(p)-64:]); err != nil {
					t.Errorf("the cache's log shows no hit of %s: %v", p, err)
				}
			}

			f.cache.Kill()
			f.origin.Probe(t.Context())
			d.run(t, "rmi", f.ref())
			d.run(t, "pull", f.ref())
			checkDockerImage(t, d, df)
			for _, p := range f.blobPaths() {
				if direct, _ := f.counts.get(p); direct != 1 {
					t.Errorf("after the cache died: the origin served %s directly %d times, want 1", p, direct)
				}
			}
		})
	}
}
