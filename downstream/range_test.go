package downstream_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// blobHeaders are the headers a blob answer is compared on.
var blobHeaders = []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Docker-Content-Digest", "Etag"}

// Range, with and without If-Range, answered as the origin answers: on a
// miss (the blob streamed from its fill) and on a hit.
func TestBlobRangeLikeOrigin(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(45, 1, 100_000)
	img.Repo = "public/app"
	push(t, origin, img)
	d := digest.FromBytes(img.Layers[0])
	path := "/v2/public/app/blobs/" + d.String()
	etag := `"` + d.String() + `"`
	size := strconv.Itoa(len(img.Layers[0]))
	cases := []struct {
		name      string
		hdr       http.Header
		want      int
		needsBody bool
	}{
		{"plain range", http.Header{"Range": {"bytes=10-19"}}, http.StatusPartialContent, true},
		{"If-Range matches", http.Header{"Range": {"bytes=10-19"}, "If-Range": {etag}}, http.StatusPartialContent, true},
		{"If-Range other etag", http.Header{"Range": {"bytes=10-19"}, "If-Range": {`"sha256:0"`}}, http.StatusOK, true},
		{"If-Range weak", http.Header{"Range": {"bytes=10-19"}, "If-Range": {"W/" + etag}}, http.StatusOK, true},
		{"If-Range date", http.Header{"Range": {"bytes=10-19"}, "If-Range": {"Wed, 21 Oct 2015 07:28:00 GMT"}}, http.StatusOK, true},
		{"If-Range other, suffix", http.Header{"Range": {"bytes=-5"}, "If-Range": {`"x"`}}, http.StatusOK, true},
		{"suffix", http.Header{"Range": {"bytes=-5"}}, http.StatusPartialContent, true},
		{"suffix 0", http.Header{"Range": {"bytes=-0"}}, 0, false},
		{"past the end", http.Header{"Range": {"bytes=" + size + "-"}}, http.StatusRequestedRangeNotSatisfiable, false},
		{"past the end, If-Range other", http.Header{"Range": {"bytes=" + size + "-"}, "If-Range": {`"x"`}}, http.StatusOK, true},
		{"suffix 0, If-Range matches", http.Header{"Range": {"bytes=-0"}, "If-Range": {etag}}, 0, false},
	}
	// Misses: a fresh cache for each, so that the request starts the fill
	// and is answered from it (a GET), or is the origin's answer to the
	// same HEAD.
	for _, c := range cases {
		cache := regtest.StartCache(t, origin.URL, nil)
		sameAnswer(t, "miss, HEAD, "+c.name, origin, cache, http.MethodHead, path, c.hdr, blobHeaders...)
		o, _ := sameAnswer(t, "miss, "+c.name, origin, cache, http.MethodGet, path, c.hdr, blobHeaders...)
		if c.want != 0 && o.status != c.want {
			t.Fatalf("%s: origin answered %d, want %d; the case tests nothing", c.name, o.status, c.want)
		}
		if c.needsBody && len(o.body) == 0 {
			t.Fatalf("%s: origin sent no body; the case tests nothing", c.name)
		}
	}
	// Hits: stored and allowed.
	cache := regtest.StartCache(t, origin.URL, map[string]any{"authttl": "1h"})
	if a := ask(t, cache.URL, http.MethodGet, path, nil); a.status != http.StatusOK {
		t.Fatalf("warming: status %d", a.status)
	}
	fillsDone(t, cache) // committed and linked after the client's last byte
	if !blobStored(cache.Root, d) {
		t.Fatal("the blob was not stored")
	}
	before := total(origin.Counts.Snapshot())
	for _, c := range cases {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			sameAnswer(t, "hit, "+c.name, origin, cache, method, path, c.hdr, blobHeaders...)
		}
	}
	// Each case asked the origin once, itself; the cache asked nothing.
	if n := total(origin.Counts.Snapshot()) - before - 2*len(cases); n != 0 {
		t.Errorf("the hits sent the origin %d requests, want 0", n)
	}
}
