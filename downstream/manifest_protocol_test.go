package downstream_test

import (
	"net/http"
	"testing"

	"github.com/content-cache/content-cache/internal/regtest"
)

// manifestHeaders are the headers a manifest answer is compared on.
var manifestHeaders = []string{"Content-Type", "Content-Length", "Docker-Content-Digest", "Etag", "Docker-Distribution-API-Version"}

// If-None-Match naming the manifest's digest gets 304, as at the origin:
// on a hit (served from storage), on a miss (fetched for this request),
// by digest and by tag, GET and HEAD. distribution compares the header
// value exactly, quoted or not; anything else gets the manifest.
func TestManifestIfNoneMatch(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	img := regtest.RandomImage(42, 1, 1000)
	img.Repo = "public/app"
	push(t, origin, img)
	bob := func(inm string) http.Header {
		h := ociAccept()
		h.Set("Authorization", basic("bob", "bob-pw"))
		h.Set("If-None-Match", inm)
		return h
	}
	quoted := `"` + img.Digest.String() + `"`
	byDigest := "/v2/public/app/manifests/" + img.Digest.String()
	byTag := "/v2/public/app/manifests/" + img.Tag
	type tc struct {
		name, method, path, inm string
		want                    int
	}
	cases := []tc{
		{"quoted, by digest", http.MethodGet, byDigest, quoted, http.StatusNotModified},
		{"unquoted, by digest", http.MethodGet, byDigest, img.Digest.String(), http.StatusNotModified},
		{"quoted, by tag", http.MethodGet, byTag, quoted, http.StatusNotModified},
		{"HEAD, by digest", http.MethodHead, byDigest, quoted, http.StatusNotModified},
		{"HEAD, by tag", http.MethodHead, byTag, quoted, http.StatusNotModified},
		{"other etag", http.MethodGet, byDigest, `"sha256:0"`, http.StatusOK},
		{"weak", http.MethodGet, byDigest, "W/" + quoted, http.StatusOK},
		{"star", http.MethodGet, byDigest, "*", http.StatusOK},
		{"in a list", http.MethodGet, byDigest, `"x", ` + quoted, http.StatusOK},
	}
	// Cold: each case on a cache that never saw the manifest.
	for _, c := range cases {
		cache := regtest.StartCache(t, origin.URL, nil)
		o, _ := sameAnswer(t, "cold, "+c.name, origin, cache, c.method, c.path, bob(c.inm), manifestHeaders...)
		if o.status != c.want {
			t.Fatalf("%s: origin answered %d, want %d; the case tests nothing", c.name, o.status, c.want)
		}
	}
	// Warm: the manifest stored and the credential allowed.
	cache := regtest.StartCache(t, origin.URL, map[string]any{"authttl": "1h"})
	pullImage(t, &regtest.Client{Base: cache.URL, User: "bob", Pass: "bob-pw"}, img)
	for _, c := range cases {
		sameAnswer(t, "warm, "+c.name, origin, cache, c.method, c.path, bob(c.inm), manifestHeaders...)
	}
	// Still a refusal without credentials.
	anon := http.Header{"If-None-Match": {quoted}}
	sameAnswer(t, "anonymous", origin, cache, http.MethodGet, byDigest, anon, "Content-Length", "WWW-Authenticate")
}
