package downstream_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// benchBlob pushes one 64 MiB layer to a fresh origin behind a fresh cache.
func benchBlob(b *testing.B) (origin, cache *regtest.Server, path string, size int) {
	origin = regtest.StartOrigin(b, nil)
	cache = regtest.StartCache(b, origin.URL, nil)
	img := regtest.RandomImage(99, 1, 64<<20)
	if err := regtest.Push(b.Context(), origin.URL, "", "", img); err != nil {
		b.Fatal(err)
	}
	return origin, cache, "/v2/" + img.Repo + "/blobs/" + digest.FromBytes(img.Layers[0]).String(), len(img.Layers[0])
}

func fetch(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n == 0 {
		b.Fatalf("status %d, %d bytes, %v", resp.StatusCode, n, err)
	}
}

// BenchmarkBlobOriginDirect is the baseline: the origin serving the blob.
func BenchmarkBlobOriginDirect(b *testing.B) {
	origin, _, path, size := benchBlob(b)
	c := &http.Client{Transport: &http.Transport{}}
	b.SetBytes(int64(size))
	for b.Loop() {
		fetch(b, c, origin.URL+path)
	}
}

// BenchmarkBlobCold fills the cache from the origin on every iteration.
func BenchmarkBlobCold(b *testing.B) {
	_, cache, path, size := benchBlob(b)
	c := &http.Client{Transport: &http.Transport{}}
	blobs := filepath.Join(cache.Root, "docker/registry/v2/blobs")
	b.SetBytes(int64(size))
	for b.Loop() {
		b.StopTimer()
		// The last fill commits after its client's last byte: cold
		// again only once it did.
		if err := cache.WaitFillsDone(b.Context()); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(blobs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		fetch(b, c, cache.URL+path)
	}
}

// BenchmarkBlobWarm serves a cached blob (a hit).
func BenchmarkBlobWarm(b *testing.B) {
	_, cache, path, size := benchBlob(b)
	c := &http.Client{Transport: &http.Transport{}}
	fetch(b, c, cache.URL+path)
	b.SetBytes(int64(size))
	for b.Loop() {
		fetch(b, c, cache.URL+path)
	}
}
