package downstream_test

import (
	"net/http"
	"strings"
	"testing"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

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
		{"other etag, by tag", http.MethodGet, byTag, `"sha256:0"`, http.StatusOK},
		{"unquoted, by tag", http.MethodGet, byTag, img.Digest.String(), http.StatusNotModified},
		{"weak, by tag", http.MethodGet, byTag, "W/" + quoted, http.StatusOK},
		{"star, by tag", http.MethodGet, byTag, "*", http.StatusOK},
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
	// A digest the origin does not hold: it compares If-None-Match first,
	// and answers 304 to an authorized credential; 404 without the header.
	missing := "sha256:" + strings.Repeat("1", 64)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, inm := range []string{missing, "other"} {
			o, _ := sameAnswer(t, "missing digest, If-None-Match "+inm, origin, cache, method, "/v2/public/app/manifests/"+missing, bob(inm), manifestHeaders...)
			if want := map[bool]int{true: http.StatusNotModified, false: http.StatusNotFound}[inm == missing]; o.status != want {
				t.Fatalf("missing digest, If-None-Match %s: origin answered %d, want %d; the case tests nothing", inm, o.status, want)
			}
		}
		sameAnswer(t, "missing digest, anonymous", origin, cache, method, "/v2/public/app/manifests/"+missing, http.Header{"If-None-Match": {missing}}, "Content-Length", "WWW-Authenticate")
	}
}

// A stored OCI manifest requested with an Accept that excludes its media
// type gets distribution's 404 MANIFEST_UNKNOWN, on a hit as at the origin
// (a miss forwards Accept, so the origin decides). distribution v3.1.2
// serves an OCI index whatever the Accept (it unmarshals as
// ocischema.DeserializedImageIndex, which GetManifest does not check), and
// so does the cache.
func TestManifestAcceptNegotiation(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	img := regtest.RandomImage(43, 1, 1000)
	img.Repo = "public/app"
	push(t, origin, img)
	idx, err := regtest.PushIndex(t.Context(), origin.URL, "alice", "alice-pw", img.Repo, "multi", []regtest.Image{img})
	if err != nil {
		t.Fatal(err)
	}
	accept := func(types ...string) http.Header {
		return http.Header{"Authorization": {basic("bob", "bob-pw")}, "Accept": types}
	}
	docker := "application/vnd.docker.distribution.manifest.v2+json"
	cases := []struct {
		name, path string
		hdr        http.Header
		want       int
	}{
		{"manifest, no Accept", "/v2/public/app/manifests/" + img.Digest.String(), accept(), http.StatusNotFound},
		{"manifest, docker only", "/v2/public/app/manifests/" + img.Digest.String(), accept(docker), http.StatusNotFound},
		{"manifest, index only", "/v2/public/app/manifests/" + img.Digest.String(), accept(v1.MediaTypeImageIndex), http.StatusNotFound},
		{"manifest, OCI in a list", "/v2/public/app/manifests/" + img.Digest.String(), accept(docker + ", " + v1.MediaTypeImageManifest + ";q=0.5"), http.StatusOK},
		{"index, manifest only", "/v2/public/app/manifests/" + idx.String(), accept(v1.MediaTypeImageManifest), http.StatusOK},
		{"index, no Accept", "/v2/public/app/manifests/" + idx.String(), accept(), http.StatusOK},
		{"index, OCI index", "/v2/public/app/manifests/" + idx.String(), accept(v1.MediaTypeImageIndex), http.StatusOK},
		{"manifest by tag, docker only", "/v2/public/app/manifests/" + img.Tag, accept(docker), http.StatusNotFound},
		{"manifest by tag, OCI", "/v2/public/app/manifests/" + img.Tag, accept(v1.MediaTypeImageManifest), http.StatusOK},
		{"index by tag, manifest only", "/v2/public/app/manifests/multi", accept(v1.MediaTypeImageManifest), http.StatusOK},
	}
	cache := regtest.StartCache(t, origin.URL, map[string]any{"authttl": "1h"})
	for _, c := range cases {
		// Twice: the first may store it (when the origin served it).
		for _, round := range []string{"first", "second"} {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				o, _ := sameAnswer(t, round+", "+c.name, origin, cache, method, c.path, c.hdr, manifestHeaders...)
				if o.status != c.want {
					t.Fatalf("%s: origin answered %d, want %d; the case tests nothing", c.name, o.status, c.want)
				}
			}
		}
		// Stored whatever the Accept: a cold round with the right Accept.
		sameAnswer(t, "store, "+c.name, origin, cache, http.MethodGet, c.path, accept(v1.MediaTypeImageManifest, v1.MediaTypeImageIndex), manifestHeaders...)
	}
	// And now every case again, all stored.
	for _, c := range cases {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			sameAnswer(t, "stored, "+c.name, origin, cache, method, c.path, c.hdr, manifestHeaders...)
		}
	}
}
