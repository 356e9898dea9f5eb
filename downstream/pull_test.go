package downstream_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/content-cache/content-cache/internal/regtest"
)

var users = map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

// acl: alice may do anything; bob may pull public/*; carol may pull
// private/* and public/*; anonymous may pull nothing.
func acl(user, repo string) []string {
	switch {
	case user == "alice":
		return []string{"*"}
	case user == "bob" && strings.HasPrefix(repo, "public/"):
		return []string{"pull"}
	case user == "carol":
		return []string{"pull"}
	}
	return nil
}

// get sends one request and returns status, headers and body.
func get(t *testing.T, c *regtest.Client, method, path string, hdr http.Header) (int, http.Header, []byte) {
	t.Helper()
	resp, err := c.Do(t.Context(), method, path, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, body
}

func ociAccept() http.Header {
	return http.Header{"Accept": {v1.MediaTypeImageManifest, v1.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.v2+json"}}
}

func push(t *testing.T, origin *regtest.Server, img regtest.Image) {
	t.Helper()
	if err := regtest.Push(t.Context(), origin.URL, "alice", "alice-pw", img); err != nil {
		t.Fatalf("push %s:%s: %v", img.Repo, img.Tag, err)
	}
}

// pullImage pulls img through base as user and checks every byte.
func pullImage(t *testing.T, c *regtest.Client, img regtest.Image) {
	t.Helper()
	status, hdr, body := get(t, c, http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag, ociAccept())
	if status != http.StatusOK {
		t.Fatalf("manifest %s:%s: status %d: %s", img.Repo, img.Tag, status, body)
	}
	if !bytes.Equal(body, img.Manifest) {
		t.Fatalf("manifest %s:%s: bytes differ", img.Repo, img.Tag)
	}
	if got := hdr.Get("Docker-Content-Digest"); got != img.Digest.String() {
		t.Fatalf("manifest digest header %q, want %s", got, img.Digest)
	}
	if got := hdr.Get("Content-Type"); got != img.MediaType {
		t.Fatalf("manifest content type %q, want %s", got, img.MediaType)
	}
	for _, blob := range append([][]byte{img.Config}, img.Layers...) {
		d := digest.FromBytes(blob)
		status, _, body := get(t, c, http.MethodGet, "/v2/"+img.Repo+"/blobs/"+d.String(), nil)
		if status != http.StatusOK || !bytes.Equal(body, blob) {
			t.Fatalf("blob %s: status %d, %d bytes (want %d)", d, status, len(body), len(blob))
		}
	}
}

func TestPullThroughHtpasswd(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(1, 3, 100_000)
	img.Repo = "public/app"
	push(t, origin, img)

	c := &regtest.Client{Base: cache.URL, User: "bob", Pass: "bob-pw"}
	pullImage(t, c, img)
	layer := "/v2/public/app/blobs/" + digest.FromBytes(img.Layers[0]).String()
	if n := origin.Counts.Get(http.MethodGet, layer); n != 1 {
		t.Fatalf("first pull: origin saw %d GETs of the layer, want 1", n)
	}
	tagGets := origin.Counts.Get(http.MethodGet, "/v2/public/app/manifests/"+img.Tag)
	pullImage(t, c, img)
	if n := origin.Counts.Get(http.MethodGet, layer); n != 1 {
		t.Fatalf("second pull: origin saw %d GETs of the layer, want still 1 (a hit)", n)
	}
	// The first pull GETs the tag; the second resolves it with a HEAD (the
	// manifest is held here): the tag is resolved at the origin on every
	// pull, and the manifest read from it once.
	if n := origin.Counts.Get(http.MethodGet, "/v2/public/app/manifests/"+img.Tag); n != tagGets {
		t.Fatalf("origin saw %d GETs of the tag, want still %d (the first pull's)", n, tagGets)
	}
	if n := origin.Counts.Get(http.MethodHead, "/v2/public/app/manifests/"+img.Tag); n < 1 {
		t.Fatalf("origin saw %d HEADs of the tag, want the second pull's", n)
	}
	if n := origin.Counts.Get(http.MethodGet, "/v2/public/app/manifests/"+img.Digest.String()); n != 0 {
		t.Fatalf("origin saw %d GETs of the manifest by digest, want 0 (the tag's GET brought it)", n)
	}
}

func TestTagFollowsOrigin(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, nil)
	c := &regtest.Client{Base: cache.URL}
	first := regtest.RandomImage(10, 1, 1000)
	first.Repo = "public/app"
	push(t, origin, first)
	pullImage(t, c, first)

	second := regtest.RandomImage(11, 1, 1000)
	second.Repo = "public/app"
	push(t, origin, second)
	pullImage(t, c, second)
}

func TestHeadUncachedBlobAsksUpstream(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(2, 1, 5000)
	push(t, origin, img)
	c := &regtest.Client{Base: cache.URL}
	d := digest.FromBytes(img.Layers[0])
	status, hdr, _ := get(t, c, http.MethodHead, "/v2/"+img.Repo+"/blobs/"+d.String(), nil)
	if status != http.StatusOK || hdr.Get("Content-Length") != "5000" || hdr.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("HEAD uncached blob: %d, headers %v", status, hdr)
	}
	missing := digest.FromString("nope")
	status, _, _ = get(t, c, http.MethodHead, "/v2/"+img.Repo+"/blobs/"+missing.String(), nil)
	if status != http.StatusNotFound {
		t.Fatalf("HEAD of a blob the origin lacks: %d, want 404", status)
	}
}

func TestRangeColdAndWarm(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(3, 1, 1<<20)
	push(t, origin, img)
	c := &regtest.Client{Base: cache.URL}
	layer := img.Layers[0]
	path := "/v2/" + img.Repo + "/blobs/" + digest.FromBytes(layer).String()
	for _, round := range []string{"cold", "warm"} {
		for _, tc := range []struct {
			rng        string
			start, end int // half-open
		}{
			{"bytes=100-199", 100, 200},
			{"bytes=1048000-", 1048000, 1 << 20},
			{"bytes=-10", 1<<20 - 10, 1 << 20},
		} {
			status, hdr, body := get(t, c, http.MethodGet, path, http.Header{"Range": {tc.rng}})
			if status != http.StatusPartialContent {
				t.Fatalf("%s %s: status %d, want 206", round, tc.rng, status)
			}
			if !bytes.Equal(body, layer[tc.start:tc.end]) {
				t.Fatalf("%s %s: wrong bytes (%d bytes)", round, tc.rng, len(body))
			}
			if hdr.Get("Content-Range") == "" {
				t.Fatalf("%s %s: no Content-Range", round, tc.rng)
			}
		}
	}
	if n := origin.Counts.Get(http.MethodGet, path); n != 1 {
		t.Fatalf("origin saw %d GETs of the blob, want 1", n)
	}
}

func TestReadOnly(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(4, 1, 100)
	push(t, origin, img)
	c := &regtest.Client{Base: cache.URL}
	pullImage(t, c, img)
	d := digest.FromBytes(img.Layers[0]).String()
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/v2/" + img.Repo + "/blobs/uploads/"},
		{http.MethodPost, "/v2/" + img.Repo + "/blobs/uploads/?mount=" + d + "&from=other/repo"},
		{http.MethodPut, "/v2/" + img.Repo + "/manifests/new"},
		{http.MethodDelete, "/v2/" + img.Repo + "/manifests/" + img.Digest.String()},
		{http.MethodDelete, "/v2/" + img.Repo + "/blobs/" + d},
		{http.MethodPatch, "/v2/" + img.Repo + "/blobs/uploads/some-id"},
		{http.MethodGet, "/v2/" + img.Repo + "/blobs/uploads/some-id"},
	} {
		status, _, body := get(t, c, tc.method, tc.path, nil)
		if status != http.StatusMethodNotAllowed || !strings.Contains(string(body), `"UNSUPPORTED"`) || !strings.Contains(string(body), "read-only cache of "+origin.URL) {
			t.Errorf("%s %s: %d %s, want 405 UNSUPPORTED naming the origin", tc.method, tc.path, status, body)
		}
	}
	// Still there, at the cache and at the origin.
	pullImage(t, c, img)
	pullImage(t, &regtest.Client{Base: origin.URL}, img)
}

func TestCoalescedFill(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(5, 1, 32<<20)
	push(t, origin, img)
	layer := img.Layers[0]
	d := digest.FromBytes(layer)
	path := "/v2/" + img.Repo + "/blobs/" + d.String()

	const n = 32
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(cache.URL + path)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			v := d.Verifier()
			size, err := io.Copy(v, resp.Body)
			if err != nil || resp.StatusCode != 200 || size != int64(len(layer)) || !v.Verified() {
				errs <- "bad body"
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if got := origin.Counts.Get(http.MethodGet, path); got != 1 {
		t.Fatalf("%d concurrent GETs caused %d upstream GETs, want 1", n, got)
	}
}

func TestCrossRepositoryLink(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, nil)
	a := regtest.RandomImage(6, 1, 50_000)
	a.Repo = "team/a"
	b := a
	b.Repo = "team/b"
	push(t, origin, a)
	push(t, origin, b)
	c := &regtest.Client{Base: cache.URL}
	pullImage(t, c, a)
	layer := digest.FromBytes(a.Layers[0]).String()
	headsBefore := origin.Counts.Get(http.MethodHead, "/v2/team/b/blobs/"+layer) // the push's own checks
	pullImage(t, c, b)
	if n := origin.Counts.Get(http.MethodGet, "/v2/team/b/blobs/"+layer); n != 0 {
		t.Fatalf("origin saw %d GETs of the shared layer through team/b, want 0 (linked locally)", n)
	}
	if n := origin.Counts.Get(http.MethodHead, "/v2/team/b/blobs/"+layer) - headsBefore; n != 1 {
		t.Fatalf("origin saw %d HEADs of the shared layer through team/b, want 1 (the confirmation)", n)
	}
}

func TestIndexAndManifestByDigest(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, map[string]any{"authttl": 0})
	var imgs []regtest.Image
	for seed := int64(30); seed < 32; seed++ {
		img := regtest.RandomImage(seed, 1, 1000)
		img.Repo, img.Tag = "public/multi", "p"+strconv.FormatInt(seed, 10)
		push(t, origin, img)
		imgs = append(imgs, img)
	}
	idx, err := regtest.PushIndex(t.Context(), origin.URL, "alice", "alice-pw", "public/multi", "v1", imgs)
	if err != nil {
		t.Fatal(err)
	}
	c := &regtest.Client{Base: cache.URL}
	for round := range 2 {
		status, hdr, body := get(t, c, http.MethodGet, "/v2/public/multi/manifests/v1", ociAccept())
		if status != http.StatusOK || hdr.Get("Content-Type") != v1.MediaTypeImageIndex || digest.FromBytes(body) != idx {
			t.Fatalf("round %d: index by tag: %d %q digest %s, want %s", round, status, hdr.Get("Content-Type"), digest.FromBytes(body), idx)
		}
		for _, img := range imgs {
			status, hdr, body := get(t, c, http.MethodGet, "/v2/public/multi/manifests/"+img.Digest.String(), ociAccept())
			if status != http.StatusOK || !bytes.Equal(body, img.Manifest) || hdr.Get("Content-Type") != img.MediaType {
				t.Fatalf("round %d: manifest by digest: %d %q", round, status, hdr.Get("Content-Type"))
			}
		}
	}
	for _, img := range imgs {
		if n := origin.Counts.Get(http.MethodGet, "/v2/public/multi/manifests/"+img.Digest.String()); n != 1 {
			t.Fatalf("origin saw %d GETs of a child manifest, want 1 (then HEADs only)", n)
		}
	}
}

// TestWarmBlobAnswersLikeOrigin: a hit, served from the storage driver,
// answers status, length and the headers clients use as the origin
// (distribution's own blob server) does.
func TestWarmBlobAnswersLikeOrigin(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(4, 1, 300<<10)
	push(t, origin, img)
	d := digest.FromBytes(img.Layers[0])
	path := "/v2/" + img.Repo + "/blobs/" + d.String()
	oc, cc := &regtest.Client{Base: origin.URL}, &regtest.Client{Base: cache.URL}
	get(t, cc, http.MethodGet, path, nil)
	// A hit only once the fill committed, after the client's last byte:
	// until then the request joins the fill, which does not answer 304.
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method string
		hdr    http.Header
	}{
		{http.MethodGet, nil},
		{http.MethodHead, nil},
		{http.MethodGet, http.Header{"If-None-Match": {`"` + d.String() + `"`}}},
		{http.MethodGet, http.Header{"If-None-Match": {`"sha256:other"`}}},
		{http.MethodGet, http.Header{"Range": {"bytes=5-9"}}},
		{http.MethodHead, http.Header{"Range": {"bytes=5-9"}}},
		{http.MethodGet, http.Header{"Range": {"bytes=0-0,10-20"}}},
		{http.MethodGet, http.Header{"Range": {"bytes=999999999-"}}},
	} {
		os, oh, ob := get(t, oc, tc.method, path, tc.hdr)
		cs, ch, cb := get(t, cc, tc.method, path, tc.hdr)
		name := fmt.Sprintf("%s %v", tc.method, tc.hdr)
		if cs != os {
			t.Errorf("%s: status %d, origin %d", name, cs, os)
		}
		multipart := strings.HasPrefix(ch.Get("Content-Type"), "multipart/") // random boundaries
		if cs < 300 && !multipart && !bytes.Equal(cb, ob) {
			t.Errorf("%s: %d bytes differ from the origin's %d", name, len(cb), len(ob))
		}
		for _, k := range []string{"Content-Length", "Content-Range", "Docker-Content-Digest", "ETag", "Accept-Ranges"} {
			if ch.Get(k) != oh.Get(k) {
				t.Errorf("%s: %s %q, origin %q", name, k, ch.Get(k), oh.Get(k))
			}
		}
	}
}
