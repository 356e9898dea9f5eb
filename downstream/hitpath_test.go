package downstream_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// hitSetup is a cache over an htpasswd origin with a small private blob and
// a clock the test moves.
type hitSetup struct {
	origin, cache *regtest.Server
	clock         *regtest.Clock
	carol, bob    string // Authorization: carol's token for the repository, bob's for another
	img           regtest.Image
	blob          string // the path of the blob's GET
	dgst          digest.Digest
}

func newHitSetup(t *testing.T) *hitSetup {
	t.Helper()
	ts := regtest.NewTokenServer(t, users, acl)
	origin := regtest.StartOrigin(t, ts.AuthConfig())
	img := regtest.RandomImage(31, 1, 4096)
	img.Repo, img.Tag = "private/hits", "v1"
	push(t, origin, img)
	clock := &regtest.Clock{}
	extra := map[string]any{"authttl": "1m"}
	downstream.SetOptions(extra, downstream.Options{Now: clock.Now})
	cache := regtest.StartCache(t, origin.URL, extra)
	dgst := digest.FromBytes(img.Layers[0])
	token := func(user, repo string) string {
		return "Bearer " + ts.Mint(user, []regtest.ResourceActions{{Type: "repository", Name: repo, Actions: []string{"pull"}}}, time.Hour)
	}
	return &hitSetup{origin: origin, cache: cache, clock: clock, img: img, blob: "/v2/private/hits/blobs/" + dgst.String(), dgst: dgst,
		carol: token("carol", img.Repo), bob: token("bob", "public/app")}
}

// originBlobRequests counts the origin's answers about the blob (GET and
// HEAD): each is a question the cache asked.
func (s *hitSetup) originBlobRequests() int {
	return s.origin.Counts.Get(http.MethodGet, s.blob) + s.origin.Counts.Get(http.MethodHead, s.blob)
}

// warm has the cache fetch and store the blob (a miss), for carol.
func (s *hitSetup) warm(t *testing.T) {
	t.Helper()
	if st, _, b := rawGet(t, s.cache.URL, http.MethodGet, s.blob, s.carol); st != http.StatusOK || !bytes.Equal(b, s.img.Layers[0]) {
		t.Fatalf("carol's first GET: %d, %d bytes", st, len(b))
	}
	fillsDone(t, s.cache)
}

// The hit path answers exactly as the full path does: the same status,
// headers (but Date) and body, for GET and HEAD, without asking the origin
// again within authttl.
func TestHitPathAnswersAsFullPath(t *testing.T) {
	s := newHitSetup(t)
	s.warm(t)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		st0, h0, b0 := rawGet(t, s.cache.URL, method, s.blob, s.carol) // the full path: asks, links
		asked := s.originBlobRequests()
		for i := range 3 { // the hit path
			st, h, b := rawGet(t, s.cache.URL, method, s.blob, s.carol)
			if st != st0 || !bytes.Equal(b, b0) {
				t.Fatalf("%s %d: %d %d bytes, first answer %d %d bytes", method, i, st, len(b), st0, len(b0))
			}
			h.Del("Date")
			h0 := h0.Clone()
			h0.Del("Date")
			if got, want := canonical(h), canonical(h0); got != want {
				t.Errorf("%s %d: headers\n%s\nfirst answer's\n%s", method, i, got, want)
			}
		}
		if method == http.MethodGet && (st0 != http.StatusOK || !bytes.Equal(b0, s.img.Layers[0])) {
			t.Fatalf("GET: %d, %d bytes; want the layer", st0, len(b0))
		}
		if n := s.originBlobRequests(); n != asked {
			t.Errorf("%s: the origin was asked %d more times within authttl", method, n-asked)
		}
	}
}

func canonical(h http.Header) string {
	var b strings.Builder
	for _, k := range sortedKeys(h) {
		b.WriteString(k + ": " + strings.Join(h[k], ", ") + "\n")
	}
	return b.String()
}

func sortedKeys(h http.Header) []string {
	var ks []string
	for k := range h {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}

// A decision is per credential: carol's does not let bob's request through
// the hit path (he gets the origin's refusal, and none of the bytes), and
// carol's own ends with authttl (the origin is asked again).
func TestHitPathDecisionPerCredential(t *testing.T) {
	s := newHitSetup(t)
	s.warm(t)
	for range 2 {
		if st, _, _ := rawGet(t, s.cache.URL, http.MethodGet, s.blob, s.carol); st != http.StatusOK {
			t.Fatalf("carol: %d", st)
		}
	}
	for _, auth := range []string{s.bob, "", basic("carol", "carol-pw")} {
		oSt, _, _ := rawGet(t, s.origin.URL, http.MethodGet, s.blob, auth)
		st, _, b := rawGet(t, s.cache.URL, http.MethodGet, s.blob, auth)
		if st != oSt || bytes.Contains(b, s.img.Layers[0][:64]) {
			t.Errorf("authorization %q: cache %d (%d bytes), origin %d", auth, st, len(b), oSt)
		}
	}
	asked := s.originBlobRequests()
	s.clock.Advance(time.Minute)
	if st, _, _ := rawGet(t, s.cache.URL, http.MethodGet, s.blob, s.carol); st != http.StatusOK {
		t.Fatalf("carol after authttl: %d", st)
	}
	if s.originBlobRequests() == asked {
		t.Error("carol's decision outlived authttl: the origin was not asked again")
	}
}

// Data removed behind the cache's back (another cache sharing the storage
// expired it) is never served from a file the hit path keeps open: the
// cache fetches it again.
func TestHitPathNeverServesRemovedData(t *testing.T) {
	s := newHitSetup(t)
	s.warm(t)
	for range 3 { // the full path, then the hit path (which keeps the file open)
		if st, _, _ := rawGet(t, s.cache.URL, http.MethodGet, s.blob, s.carol); st != http.StatusOK {
			t.Fatalf("carol: %d", st)
		}
	}
	hex := s.dgst.Encoded()
	data := filepath.Join(s.cache.Root, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
	if err := os.Remove(data); err != nil {
		t.Fatal(err)
	}
	fetched := s.origin.Counts.Get(http.MethodGet, s.blob)
	st, _, b := rawGet(t, s.cache.URL, http.MethodGet, s.blob, s.carol)
	if st != http.StatusOK || !bytes.Equal(b, s.img.Layers[0]) {
		t.Fatalf("after removal: %d, %d bytes", st, len(b))
	}
	if s.origin.Counts.Get(http.MethodGet, s.blob) == fetched {
		t.Error("removed data was served from a kept file: the origin was not asked for the blob again")
	}
}
