package origin

import (
	"net/http"
	"testing"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestTransparentPullAtCacheAddress: a user assigned to a cache may still
// pull through that cache's own address with credentials (the cache's
// first way). The origin must answer the cache's own requests itself,
// never redirect them (back) to a cache.
func TestTransparentPullAtCacheAddress(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	alice := following(s.cache.URL, "alice", "alicepw")
	for _, round := range []string{"cold", "warm"} {
		if r := do(t, alice, http.MethodGet, s.blobPath); r.Status != http.StatusOK || r.Body != string(s.img.Layers[0]) {
			t.Fatalf("%s pull at the cache's address: %d %q", round, r.Status, r.Body[:min(len(r.Body), 200)])
		}
	}
	if got := s.og.Counts.snapshot(); got.blobGETs != 1 || got.signedGETs != 0 {
		t.Errorf("the origin served %d blob GETs (%d signed), want 1 fill with alice's credential", got.blobGETs, got.signedGETs)
	}
}
