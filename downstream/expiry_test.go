package downstream_test

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// expiring starts a cache with blobttl over the storage under root, on a
// clock the test moves, sweeping only when the test says so.
func expiring(t *testing.T, root, origin string, clock *regtest.Clock, ttl string, logs io.Writer) *regtest.Server {
	t.Helper()
	extra := map[string]any{"blobttl": ttl}
	opts := downstream.Options{Now: clock.Now, ManualSweep: true}
	if logs != nil {
		l := logrus.New()
		l.SetOutput(logs)
		opts.Logger = logrus.NewEntry(l)
	}
	downstream.SetOptions(extra, opts)
	return regtest.StartCacheAt(t, root, origin, extra)
}

// pull GETs path from s and checks the body against its digest.
func pull(t *testing.T, s *regtest.Server, path string, want digest.Digest) {
	t.Helper()
	if err := tryPull(t.Context(), s, path, want); err != nil {
		t.Fatal(err)
	}
	// As a pull did before fills committed after the last byte: storage
	// and sweeps then see what the pull stored.
	fillsDone(t, s)
}

func tryPull(ctx context.Context, s *regtest.Server, path string, want digest.Digest) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != want {
		return fmt.Errorf("GET %s: status %d, %d bytes hashing to %s, %v; want 200 with %s", path, resp.StatusCode, len(body), digest.FromBytes(body), err, want)
	}
	return nil
}

// sweep runs a sweep once s is idle (a handler may still be running after
// its client read the last byte).
func sweep(t *testing.T, s *regtest.Server, want downstream.SweepStats) {
	t.Helper()
	idle(t, s)
	got, err := s.Cache.Sweep(t.Context())
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if got != want {
		t.Fatalf("sweep = %+v, want %+v", got, want)
	}
}

// blobBytes is the size of all blob data under a cache's storage root.
func blobBytes(t *testing.T, root string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(root, "docker/registry/v2/blobs"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		n += fi.Size()
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return n
}

// linked reports whether repo links dgst in the storage under root.
func linked(root, repo string, dgst digest.Digest) bool {
	_, err := os.Stat(filepath.Join(root, "docker/registry/v2/repositories", repo, "_layers", "sha256", dgst.Encoded(), "link"))
	return err == nil
}

func layerAt(img regtest.Image, i int) (string, digest.Digest) {
	d := digest.FromBytes(img.Layers[i])
	return "/v2/" + img.Repo + "/blobs/" + d.String(), d
}

func manifestPath(img regtest.Image, ref string) string {
	return "/v2/" + img.Repo + "/manifests/" + ref
}

func pushImage(t *testing.T, origin *regtest.Server, img regtest.Image) {
	t.Helper()
	if err := regtest.Push(t.Context(), origin.URL, "", "", img); err != nil {
		t.Fatal(err)
	}
}

// TestExpiryFreesSpace: content nobody pulled for blobttl leaves the disk,
// is logged and counted, and the next pull fetches it from the origin again.
func TestExpiryFreesSpace(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(41, 2, 1<<20)
	pushImage(t, origin, img)
	clock := &regtest.Clock{}
	var logs regtest.Buffer
	root := t.TempDir()
	cache := expiring(t, root, origin.URL, clock, "2s", &logs) // removal after 2.2s

	l0, d0 := layerAt(img, 0)
	l1, d1 := layerAt(img, 1)
	pull(t, cache, manifestPath(img, img.Tag), img.Digest)
	pull(t, cache, l0, d0)
	pull(t, cache, l1, d1)
	if left := uploadsLeft(t, root); len(left) > 0 {
		t.Fatalf("fills left uploads behind: %q", left)
	}
	before := blobBytes(t, root)
	if before < 2<<20 {
		t.Fatalf("%d bytes stored after the pulls", before)
	}

	sweep(t, cache, downstream.SweepStats{Kept: 3})
	clock.Advance(2 * time.Second) // within blobttl plus the recording window
	sweep(t, cache, downstream.SweepStats{Kept: 3})
	clock.Advance(300 * time.Millisecond)
	freed := int64(2<<20 + len(img.Manifest))
	sweep(t, cache, downstream.SweepStats{Removed: 3, Bytes: freed})

	if after := blobBytes(t, root); before-after != freed {
		t.Errorf("blob data: %d bytes before, %d after; want %d freed", before, after, freed)
	}
	if linked(root, img.Repo, d0) || linked(root, img.Repo, d1) {
		t.Error("links left after expiry")
	}
	for _, d := range []digest.Digest{d0, d1, img.Digest} {
		line := ""
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "expiry: removed") && strings.Contains(l, d.String()) {
				line = l
			}
		}
		size := int64(1 << 20)
		if d == img.Digest {
			size = int64(len(img.Manifest))
		}
		if !strings.Contains(line, fmt.Sprintf("bytes=%d ", size)) || !strings.Contains(line, "repositories=\"["+img.Repo+"]\"") {
			t.Errorf("removal of %s logged as %q; want its bytes (%d) and repository", d, line, size)
		}
	}
	all := scrape(t, cache.Cache.Gatherer())
	if all[`content_cache_evictions_total{reason="ttl"}`] != 3 || all[`content_cache_evicted_bytes_total{reason="ttl"}`] != float64(freed) {
		t.Errorf("metrics: %v evictions, %v bytes; want 3, %d", all[`content_cache_evictions_total{reason="ttl"}`], all[`content_cache_evicted_bytes_total{reason="ttl"}`], freed)
	}

	// Pulled again: fetched from the origin again, manifest and layers.
	gets := func() [3]int {
		return [3]int{
			origin.Counts.Get("GET", l0), origin.Counts.Get("GET", l1),
			origin.Counts.Get("GET", manifestPath(img, img.Digest.String())),
		}
	}
	was := gets()
	pull(t, cache, manifestPath(img, img.Tag), img.Digest)
	pull(t, cache, l0, d0)
	pull(t, cache, l1, d1)
	if now := gets(); now != [3]int{was[0] + 1, was[1] + 1, was[2] + 1} {
		t.Errorf("origin GETs (layer 0, layer 1, manifest) before %v, after %v; want one more each", was, now)
	}
}

// TestExpirySharedBlob: a blob linked from two repositories stays while
// one of them keeps pulling it, then goes from both, and neither is left
// pointing at deleted data.
func TestExpirySharedBlob(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	a := regtest.RandomImage(42, 1, 512<<10)
	b := a
	a.Repo, b.Repo = "shared/a", "shared/b"
	pushImage(t, origin, a)
	pushImage(t, origin, b)
	clock := &regtest.Clock{}
	root := t.TempDir()
	cache := expiring(t, root, origin.URL, clock, "2s", nil)

	pa, d := layerAt(a, 0)
	pb, _ := layerAt(b, 0)
	pull(t, cache, pa, d)
	pull(t, cache, pb, d)
	if !linked(root, a.Repo, d) || !linked(root, b.Repo, d) {
		t.Fatal("not linked into both repositories")
	}
	for range 5 { // 5s: more than twice blobttl, only a pulls
		clock.Advance(time.Second)
		pull(t, cache, pa, d)
		sweep(t, cache, downstream.SweepStats{Kept: 1})
	}
	if !linked(root, b.Repo, d) || blobBytes(t, root) != 512<<10 {
		t.Fatal("removed while shared/a kept pulling it")
	}
	fetches := origin.Counts.Get("GET", pb)
	pull(t, cache, pb, d)
	if origin.Counts.Get("GET", pb) != fetches {
		t.Fatal("shared/b fetched again while its link should have stayed")
	}

	clock.Advance(2300 * time.Millisecond)
	sweep(t, cache, downstream.SweepStats{Removed: 1, Bytes: 512 << 10})
	if linked(root, a.Repo, d) || linked(root, b.Repo, d) || blobBytes(t, root) != 0 {
		t.Fatal("links or data left after expiry")
	}
	pull(t, cache, pb, d)
	pull(t, cache, pa, d)
	if got := origin.Counts.Get("GET", pb); got != fetches+1 {
		t.Errorf("origin GETs through shared/b: %d, want %d", got, fetches+1)
	}
}

// TestExpiryRacesPulls: pulls while sweeps remove the same blob always get
// the right bytes.
func TestExpiryRacesPulls(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(43, 1, 256<<10)
	pushImage(t, origin, img)
	clock := &regtest.Clock{}
	cache := expiring(t, t.TempDir(), origin.URL, clock, "1s", nil)
	p, d := layerAt(img, 0)

	var removed, busy int
	for range 20 {
		clock.Advance(2 * time.Second) // expired, unless a pull comes first
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() { errs <- tryPull(t.Context(), cache, p, d) })
		}
		st, err := cache.Cache.Sweep(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		removed += st.Removed
		busy += st.Busy
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("20 rounds: %d removals, %d skipped as in use, %d origin GETs", removed, busy, origin.Counts.Get("GET", p))
	if removed == 0 {
		t.Fatal("no sweep removed the blob: the race was not exercised")
	}
	if got := origin.Counts.Get("GET", p); got < removed {
		t.Errorf("%d removals but %d origin GETs", removed, got)
	}
}

// TestExpiryRestart: records outlive the process, adoption at startup does
// not reset them, and a changed blobttl applies to them.
func TestExpiryRestart(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(44, 1, 256<<10)
	pushImage(t, origin, img)
	clock := &regtest.Clock{}
	root := t.TempDir()
	p, d := layerAt(img, 0)

	first := expiring(t, root, origin.URL, clock, "2s", nil)
	pull(t, first, p, d)
	idle(t, first)
	first.Kill()
	_ = first.Cache.Close()

	// Restarted with a longer blobttl: kept past the old one.
	clock.Advance(5 * time.Second)
	second := expiring(t, root, origin.URL, clock, "10s", nil)
	sweep(t, second, downstream.SweepStats{Kept: 1})
	second.Kill()
	_ = second.Cache.Close()

	// Restarted with a shorter one: removed, counted from the first pull.
	third := expiring(t, root, origin.URL, clock, "1s", nil)
	sweep(t, third, downstream.SweepStats{Removed: 1, Bytes: 256 << 10})
	fetches := origin.Counts.Get("GET", p)
	pull(t, third, p, d)
	if origin.Counts.Get("GET", p) != fetches+1 {
		t.Fatal("not fetched again after expiry")
	}
}

// TestExpiryAdoptsUnrecorded: content stored while blobttl was off is
// adopted as pulled at the first sweep, then expires.
func TestExpiryAdoptsUnrecorded(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(45, 2, 128<<10)
	pushImage(t, origin, img)
	root := t.TempDir()
	plain := regtest.StartCacheAt(t, root, origin.URL, nil)
	l0, d0 := layerAt(img, 0)
	pull(t, plain, manifestPath(img, img.Tag), img.Digest)
	pull(t, plain, l0, d0)
	idle(t, plain)
	plain.Kill()
	_ = plain.Cache.Close()
	if _, err := os.Stat(filepath.Join(root, "content-cache")); !os.IsNotExist(err) {
		t.Fatalf("records written without blobttl: %v", err)
	}

	clock := &regtest.Clock{}
	cache := expiring(t, root, origin.URL, clock, "2s", nil)
	sweep(t, cache, downstream.SweepStats{Adopted: 2, Kept: 2})
	clock.Advance(2 * time.Second)
	sweep(t, cache, downstream.SweepStats{Kept: 2})
	clock.Advance(time.Second)
	sweep(t, cache, downstream.SweepStats{Removed: 2, Bytes: int64(128<<10 + len(img.Manifest))})
	if blobBytes(t, root) != 0 || linked(root, img.Repo, d0) {
		t.Fatal("adopted content not removed")
	}
}

// TestExpirySharedStorage: two caches on one storage see each other's
// pulls: one sweeping does not remove what the other keeps pulling.
func TestExpirySharedStorage(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(46, 1, 256<<10)
	pushImage(t, origin, img)
	clock := &regtest.Clock{}
	root := t.TempDir()
	puller := expiring(t, root, origin.URL, clock, "2s", nil)
	sweeper := expiring(t, root, origin.URL, clock, "2s", nil)
	p, d := layerAt(img, 0)

	pull(t, puller, p, d)
	for range 6 {
		clock.Advance(time.Second)
		pull(t, puller, p, d)
		sweep(t, sweeper, downstream.SweepStats{Kept: 1})
	}
	pull(t, sweeper, p, d) // a hit on the other replica
	if got := origin.Counts.Get("GET", p); got != 1 {
		t.Fatalf("%d origin GETs, want 1", got)
	}
	clock.Advance(3 * time.Second)
	sweep(t, sweeper, downstream.SweepStats{Removed: 1, Bytes: 256 << 10})
	pull(t, puller, p, d)
	if got := origin.Counts.Get("GET", p); got != 2 {
		t.Fatalf("%d origin GETs after expiry, want 2", got)
	}

	// Data gone under a link (a replica that died halfway through a
	// removal): a miss, not an error.
	if err := os.RemoveAll(filepath.Join(root, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded())); err != nil {
		t.Fatal(err)
	}
	pull(t, sweeper, p, d)
	if got := origin.Counts.Get("GET", p); got != 3 {
		t.Fatalf("%d origin GETs after the data vanished, want 3", got)
	}
}
