package downstream_test

import (
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// BenchmarkBlobWarmTLS serves a cached 64 MiB blob over HTTPS (HTTP/1.1),
// next to the plain registry (the origin) serving it with the same TLS:
// compare "cache" with "origin" in one run.
func BenchmarkBlobWarmTLS(b *testing.B) {
	ca := regtest.NewCA(b)
	origin := regtest.StartOriginTLS(b, nil, ca)
	cache := regtest.StartCacheTLS(b, origin.URL, map[string]any{"cas": []any{ca.File}}, ca)
	img := regtest.RandomImage(97, 1, 64<<20)
	if err := regtest.PushWith(b.Context(), ca.Client(), origin.URL, "", "", img); err != nil {
		b.Fatal(err)
	}
	path := "/v2/" + img.Repo + "/blobs/" + digest.FromBytes(img.Layers[0]).String()
	c := ca.Client()
	fetch(b, c, cache.URL+path) // the fill
	for _, t := range []struct{ name, url string }{{"origin", origin.URL}, {"cache", cache.URL}} {
		b.Run(t.name, func(b *testing.B) {
			b.SetBytes(int64(len(img.Layers[0])))
			for b.Loop() {
				fetch(b, c, t.url+path)
			}
		})
	}
}
