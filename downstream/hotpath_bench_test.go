package downstream_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// Benchmarks of the cache's hot paths, in process. They run only with
// -bench; at -benchtime 1x each takes well under a second after its setup.
// The side-by-side comparison with distribution's own proxy, as separate
// processes, is `make bench` (./bench).

var hotUsers = map[string]string{"alice": "alice-pw"}

// hotSetup serves an htpasswd origin holding one image of a single layer of
// size bytes, and a cache in front of it. It returns the cache, the blob's
// path and a request template carrying alice's credentials.
func hotSetup(b *testing.B, seed int64, size int) (origin, cache *regtest.Server, path string, authz string) {
	b.Helper()
	origin = regtest.StartOrigin(b, regtest.HtpasswdAuth(b, hotUsers))
	cache = regtest.StartCache(b, origin.URL, nil)
	img := regtest.RandomImage(seed, 1, size)
	if err := regtest.Push(b.Context(), origin.URL, "alice", "alice-pw", img); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth("alice", "alice-pw")
	return origin, cache, "/v2/" + img.Repo + "/blobs/" + digest.FromBytes(img.Layers[0]).String(), req.Header.Get("Authorization")
}

// discardWriter is a ResponseWriter that keeps the status and drops the
// body, so that a handler benchmark measures the handler alone.
type discardWriter struct {
	h      http.Header
	status int
	n      int64
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}

func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.n += int64(len(p))
	return len(p), nil
}

// BenchmarkServeHit serves a stored 4 KiB blob to a client whose access the
// origin allowed within authttl: no upstream round trip. "handler" calls
// the cache's handler directly (its allocations alone); "loopback" goes
// through a real HTTP client and server.
func BenchmarkServeHit(b *testing.B) {
	const size = 4 << 10
	origin, cache, path, authz := hotSetup(b, 11, size)
	c := &http.Client{Transport: &http.Transport{}}
	get := func() {
		req, _ := http.NewRequestWithContext(b.Context(), http.MethodGet, cache.URL+path, nil)
		req.Header.Set("Authorization", authz)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n != size {
			b.Fatalf("GET: %d, %d bytes", resp.StatusCode, n)
		}
	}
	get() // the fill, and the origin's "allowed"

	b.Run("handler", func(b *testing.B) {
		h := cache.Cache.Handler(http.NotFoundHandler())
		req := httptest.NewRequest(http.MethodGet, path, nil).WithContext(b.Context())
		req.Header.Set("Authorization", authz)
		before := origin.Counts.Snapshot()
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			w := &discardWriter{h: http.Header{}}
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK || w.n != size {
				b.Fatalf("hit: status %d, %d bytes", w.status, w.n)
			}
		}
		if after := origin.Counts.Snapshot(); len(after) != len(before) || after["GET "+path] != before["GET "+path] {
			b.Fatalf("a hit reached the origin: %v, then %v", before, after)
		}
	})
	b.Run("loopback", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			get()
		}
	})
}

// BenchmarkCoalescedFanOut: per iteration, 32 clients GET the same 1 MiB
// blob that the cache does not hold, all at once; the cache fetches it from
// the origin once and streams it to all of them. upstream-GETs/op must be 1.
func BenchmarkCoalescedFanOut(b *testing.B) {
	const clients, size = 32, 1 << 20
	origin, cache, path, authz := hotSetup(b, 12, size)
	blobs := filepath.Join(cache.Root, "docker/registry/v2/blobs")
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	get := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cache.URL+path, nil)
		req.Header.Set("Authorization", authz)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || n != size) {
			b.Errorf("GET: %d, %d bytes", resp.StatusCode, n)
		}
		return err
	}
	start := origin.Counts.Get(http.MethodGet, path)
	b.SetBytes(clients * size)
	b.ReportAllocs()
	iterations := 0
	for b.Loop() {
		b.StopTimer()
		// Cold again: the blob's data goes, its link in the repository
		// stays (a Stat then misses), once the last fill committed.
		if err := cache.WaitFillsDone(b.Context()); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(blobs); err != nil {
			b.Fatal(err)
		}
		gate := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				if err := get(b.Context()); err != nil {
					errs <- err
				}
			}()
		}
		b.StartTimer()
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		iterations++
	}
	fetches := float64(origin.Counts.Get(http.MethodGet, path)-start) / float64(iterations)
	b.ReportMetric(fetches, "upstream-GETs/op")
	if fetches != 1 {
		b.Errorf("%.2f upstream fetches per %d concurrent misses, want 1", fetches, clients)
	}
}
