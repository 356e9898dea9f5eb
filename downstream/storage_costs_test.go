package downstream_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// isListing reports whether an object store operation lists keys.
func isListing(op string) bool { return strings.HasPrefix(op, "List") }

// TestStorageRequestCounts counts the object store's requests for a miss,
// a hit (served by the cache, and redirected), a manifest hit and sweeps,
// with blobttl on. Hits must not list; the counts are logged for the
// README (go test -v -run TestStorageRequestCounts ./downstream).
func TestStorageRequestCounts(t *testing.T) {
	for _, b := range redirectBackends {
		t.Run(b.name, func(t *testing.T) {
			st := b.new(t)
			origin := regtest.StartOrigin(t, nil)
			img := regtest.RandomImage(151, 1, driverLayer)
			pushImage(t, origin, img)
			clock := &regtest.Clock{}
			start := func(st regtest.Storage) *regtest.Server {
				extra := map[string]any{"blobttl": "1h"}
				downstream.SetOptions(extra, downstream.Options{Now: clock.Now, ManualSweep: true})
				return regtest.StartCacheOn(t, st, origin.URL, extra)
			}
			cache := start(st)
			// The first sweep adopts; what follows is steady state.
			sweep(t, cache, downstream.SweepStats{})
			reqs := st.Server.Requests
			path, dgst := layerAt(img, 0)
			manifest := manifestPath(img, img.Digest.String())

			measure := func(what string, hot bool, do func()) map[string]int {
				t.Helper()
				before := reqs.Snapshot()
				do()
				got := reqs.Since(before)
				t.Logf("%-34s %s", what+":", regtest.Format(got))
				if hot {
					for op, n := range got {
						if isListing(op) {
							t.Errorf("%s: %d %s requests; the hot path must not list", what, n, op)
						}
					}
				}
				return got
			}

			measure("miss (6 MiB layer)", false, func() {
				pull(t, cache, path, dgst)
				fillsDone(t, cache)
			})
			measure("manifest miss", false, func() {
				pull(t, cache, manifest, img.Digest)
				fillsDone(t, cache)
			})
			hit := measure("hit, served by the cache", true, func() {
				pull(t, cache, path, dgst)
				idle(t, cache)
			})
			// Link, stat, read; azure's reader stats the blob once more.
			if n, most := regtest.Total(hit), map[string]int{"s3": 3, "azure": 4}[b.name]; n > most {
				t.Errorf("a hit made %d storage requests, want at most %d", n, most)
			}
			measure("manifest hit", true, func() {
				pull(t, cache, manifest, img.Digest)
				idle(t, cache)
			})
			// Past authttl (30s) and the record window (blobttl/10): the
			// origin is asked again, the link rewritten, the record too.
			clock.Advance(7 * time.Minute)
			measure("hit, authttl and window passed", true, func() {
				pull(t, cache, path, dgst)
				idle(t, cache)
			})

			redirecting := st
			redirecting.Redirect = true
			rc := start(redirecting)
			c := noFollow(t, st)
			var loc string
			redirected := func() {
				resp, _ := doGET(t, c, rc.URL+path, "")
				loc = resp.Header.Get("Location")
				if resp.StatusCode != http.StatusTemporaryRedirect {
					t.Fatalf("redirected hit: status %d", resp.StatusCode)
				}
				idle(t, rc)
			}
			measure("first hit at a redirecting cache", true, redirected)
			measure("hit, redirected (cache side)", true, redirected)
			measure("hit, redirected (client side)", true, func() {
				resp, body := doGET(t, c, loc, "")
				if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != dgst {
					t.Fatalf("following the redirect: status %d", resp.StatusCode)
				}
			})

			measure("sweep, nothing expired", false, func() {
				sweep(t, cache, downstream.SweepStats{Kept: 2})
			})
			clock.Advance(2 * time.Hour)
			measure("sweep, 2 digests expired", false, func() {
				sweep(t, cache, downstream.SweepStats{Removed: 2, Bytes: driverLayer + int64(len(img.Manifest))})
			})
		})
	}
}
