package origin

import (
	"net/http"
	"strings"
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

// TestTransparentOriginDown: a signed miss while the origin is down gets
// 503 UNAVAILABLE, and neither the answer nor the cache's log holds the
// signature (the transport's error names the URL it failed on).
func TestTransparentOriginDown(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	u := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	sig := u.Query().Get("cc-sig")
	s.og.stop()
	resp := send(t, http.MethodGet, u.String())
	b := body(resp)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503: %q", resp.StatusCode, b)
	}
	if strings.Contains(b, sig) {
		t.Errorf("the answer holds the signature: %q", b)
	}
	if strings.Contains(s.logs.String(), sig) {
		t.Errorf("the cache's log holds the signature:\n%s", s.logs.String())
	}
}
