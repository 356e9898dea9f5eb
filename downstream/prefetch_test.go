package downstream_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// waitCount waits (polling the origin's counts, never sleeping a guessed
// time) until every path got at least one GET at the origin.
func waitOriginGETs(t *testing.T, origin *regtest.Server, paths []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := ""
		for _, p := range paths {
			if origin.Counts.Get(http.MethodGet, p) == 0 {
				missing = p
				break
			}
		}
		if missing == "" {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the origin never saw GET %s", missing)
		}
	}
}

func blobPaths(img regtest.Image) []string {
	var out []string
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		out = append(out, "/v2/"+img.Repo+"/blobs/"+digest.FromBytes(b).String())
	}
	return out
}

// With prefetch on, serving an image manifest starts the fills of its
// config and layers: the origin sees their GETs before the client asks for
// any, once each, and the client's blob requests are then hits. The
// prefetch authorizes nobody: a user the origin refuses the repository is
// still refused, with no byte of it. Without the option, nothing is
// fetched ahead.
func TestPrefetchOnManifest(t *testing.T) {
	ts := regtest.NewTokenServer(t, users, acl)
	origin := regtest.StartOrigin(t, ts.AuthConfig())
	img := regtest.RandomImage(70, 3, 40_000)
	img.Repo, img.Tag = "private/app", "v1"
	push(t, origin, img)
	cache := regtest.StartCache(t, origin.URL, map[string]any{"prefetch": true, "authttl": "1m"})
	carol := &regtest.Client{Base: cache.URL, User: "carol", Pass: "carol-pw"}

	status, _, _ := get(t, carol, http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag, ociAccept())
	if status != http.StatusOK {
		t.Fatalf("manifest: %d", status)
	}
	paths := blobPaths(img)
	waitOriginGETs(t, origin, paths)
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if n := cache.Counts.Get(http.MethodGet, p); n != 0 {
			t.Fatalf("the client asked for %s already (%d): the test proves nothing", p, n)
		}
		if n := origin.Counts.Get(http.MethodGet, p); n != 1 {
			t.Fatalf("origin saw %d GETs of %s, want 1 (the prefetch)", n, p)
		}
	}

	// bob may not pull private/*: refused as the origin refuses him.
	bob := &regtest.Client{Base: cache.URL, User: "bob", Pass: "bob-pw"}
	for _, p := range paths {
		st, _, body := get(t, bob, http.MethodGet, p, nil)
		ost, _, _ := get(t, &regtest.Client{Base: origin.URL, User: "bob", Pass: "bob-pw"}, http.MethodGet, p, nil)
		if st != ost || st < 400 {
			t.Fatalf("bob GET %s: cache %d, origin %d; want the origin's refusal", p, st, ost)
		}
		for _, b := range append([][]byte{img.Config}, img.Layers...) {
			if len(body) > 0 && bytes.Contains(body, b[:64]) {
				t.Fatalf("bob got bytes of %s", p)
			}
		}
	}

	before := origin.Counts.Snapshot()
	pullImage(t, carol, img)
	for _, p := range paths {
		if n := origin.Counts.Get(http.MethodGet, p) - before[http.MethodGet+" "+p]; n != 0 {
			t.Fatalf("carol's pull made %d GETs of %s at the origin, want 0 (prefetched)", n, p)
		}
	}

	// Off (the default): the manifest fetches nothing ahead.
	other := regtest.RandomImage(71, 2, 40_000)
	other.Repo, other.Tag = "private/other", "v1"
	push(t, origin, other)
	plain := regtest.StartCache(t, origin.URL, nil)
	carolPlain := &regtest.Client{Base: plain.URL, User: "carol", Pass: "carol-pw"}
	if st, _, _ := get(t, carolPlain, http.MethodGet, "/v2/"+other.Repo+"/manifests/"+other.Tag, ociAccept()); st != http.StatusOK {
		t.Fatalf("manifest: %d", st)
	}
	if err := plain.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, p := range blobPaths(other) {
		if n := origin.Counts.Get(http.MethodGet, p); n != 0 {
			t.Fatalf("without prefetch the origin saw %d GETs of %s", n, p)
		}
	}
}

// Prefetch is bounded per manifest: with permanifest 2, an image of a
// config and 4 layers gets its config and first layer fetched ahead, and
// nothing else. An index prefetches nothing.
func TestPrefetchBounds(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	img := regtest.RandomImage(72, 4, 10_000)
	img.Repo, img.Tag = "public/app", "v1"
	push(t, origin, img)
	cache := regtest.StartCache(t, origin.URL, map[string]any{"prefetch": map[string]any{"permanifest": 2, "total": 10}})
	bob := &regtest.Client{Base: cache.URL, User: "bob", Pass: "bob-pw"}
	if st, _, _ := get(t, bob, http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag, ociAccept()); st != http.StatusOK {
		t.Fatalf("manifest: %d", st)
	}
	paths := blobPaths(img)
	waitOriginGETs(t, origin, paths[:2])
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, p := range paths {
		want := 0
		if i < 2 {
			want = 1
		}
		if n := origin.Counts.Get(http.MethodGet, p); n != want {
			t.Fatalf("origin saw %d GETs of blob %d, want %d (permanifest 2)", n, i, want)
		}
	}

	// An index: nothing ahead.
	a, b := regtest.RandomImage(73, 1, 10_000), regtest.RandomImage(74, 1, 10_000)
	a.Repo, b.Repo = "public/multi", "public/multi"
	a.Tag, b.Tag = "a", "b"
	push(t, origin, a)
	push(t, origin, b)
	if _, err := regtest.PushIndex(t.Context(), origin.URL, "alice", "alice-pw", "public/multi", "idx", []regtest.Image{a, b}); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := get(t, bob, http.MethodGet, "/v2/public/multi/manifests/idx", ociAccept()); st != http.StatusOK {
		t.Fatalf("index: %d", st)
	}
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(blobPaths(a), blobPaths(b)...) {
		if n := origin.Counts.Get(http.MethodGet, p); n != 0 {
			t.Fatalf("an index prefetched %s (%d GETs)", p, n)
		}
	}
}

// A client that asks for a prefetched blob while its fill commits (the
// data moved into place, the repository's link not yet written) waits for
// the link, which the origin's 200 to the fill for this repository and
// digest made, instead of asking the origin with a HEAD: the client holds
// a decision for the repository, and the link says the repository has the
// digest, as for any hit. Without the wait it cost a round trip to the
// origin (the last layer of a prefetched pull across the WAN: 90 ms).
func TestPrefetchedBlobCommittingIsAHit(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	img := regtest.RandomImage(72, 1, 40_000)
	img.Repo, img.Tag = "team/app", "v1"
	push(t, origin, img)
	cache, open, seen := startGatedWith(t, origin.URL, "link", "", map[string]any{"prefetch": true, "authttl": "1m"})
	alice := &regtest.Client{Base: cache.URL, User: "alice", Pass: "alice-pw"}
	if st, _, _ := get(t, alice, http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag, ociAccept()); st != http.StatusOK {
		t.Fatalf("manifest: %d", st)
	}
	layer := digest.FromBytes(img.Layers[0])
	hex := layer.Encoded()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// The layer's fill holds in its commit, its data in place.
	waitSeen := func(what string, match func(string) bool) {
		t.Helper()
		for {
			select {
			case p := <-seen:
				if match(p) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("never saw %s", what)
			}
		}
	}
	waitSeen("the layer's link held", func(p string) bool { return strings.Contains(p, hex) && strings.HasSuffix(p, "/link") })
	for len(seen) > 0 { // the commit's own Stats of the data, before the link
		<-seen
	}
	p := "/v2/" + img.Repo + "/blobs/" + layer.String()
	heads := origin.Counts.Get(http.MethodHead, p)
	type result struct {
		status int
		body   []byte
	}
	done := make(chan result, 1)
	go func() {
		st, _, body := get(t, alice, http.MethodGet, p, nil)
		done <- result{st, body}
	}()
	// The request found the data in place (and no link): from here on,
	// with the link still held, it either asks the origin or waits.
	waitSeen("the request's Stat of the layer's data", func(p string) bool { return strings.Contains(p, hex) && strings.HasSuffix(p, "/data") })
	open()
	res := <-done
	if res.status != http.StatusOK || !bytes.Equal(res.body, img.Layers[0]) {
		t.Fatalf("GET %s: %d, %d bytes", p, res.status, len(res.body))
	}
	if n := origin.Counts.Get(http.MethodHead, p) - heads; n != 0 {
		t.Fatalf("the origin got %d HEADs of %s; want none (the committing fill's link authorizes it with the decision)", n, p)
	}
	if n := origin.Counts.Get(http.MethodGet, p); n != 1 {
		t.Fatalf("the origin got %d GETs of %s; want 1 (the prefetch)", n, p)
	}
}
