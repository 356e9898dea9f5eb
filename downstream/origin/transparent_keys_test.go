package origin

import (
	"crypto/ed25519"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"
)

// TestTransparentPEMKeys: a cache given the origin's public key as a PEM
// file (no key endpoint) verifies its signatures too.
func TestTransparentPEMKeys(t *testing.T) {
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	pemBytes, err := signature.MarshalPublicKeyPEM(seeded(7).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "origin-ed25519.pub.pem")
	if err := os.WriteFile(keyPath, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	extra := map[string]any{"signing": map[string]any{"name": "region-asia", "keys": []any{keyPath}}}
	downstream.SetOptions(extra, downstream.Options{Now: clock.Now})
	cache := regtest.StartCache(t, og.URL, extra)
	img := regtest.RandomImage(7, 1, 16<<10)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	register(t, og, "", "region-asia", cache.URL)
	assign(t, og, "", "alice", "region-asia")
	og.Origin.Probe(t.Context())
	blobPath := "/v2/" + img.Repo + "/blobs/" + digestOf(img.Layers[0])
	if r := do(t, following(og.URL, "alice", "alicepw"), http.MethodGet, blobPath); r.Status != http.StatusOK || r.Body != string(img.Layers[0]) {
		t.Fatalf("pull: %d", r.Status)
	}
	if got := cache.Counts.Get(http.MethodGet, blobPath); got != 1 {
		t.Fatalf("the cache served %d blob GETs, want 1", got)
	}
	if got := og.Counts.snapshot().signedGETs; got != 1 {
		t.Fatalf("the origin served %d signed blob GETs, want 1", got)
	}
}
