package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"
)

// prefetchingCache is signingCache with prefetch on.
func prefetchingCache(t *testing.T, upstream, keysURL, name string, clock *regtest.Clock) *regtest.Server {
	t.Helper()
	l := logrus.New()
	l.SetOutput(&regtest.Buffer{})
	extra := map[string]any{"signing": map[string]any{"name": name, "keysurl": keysURL}, "prefetch": true}
	downstream.SetOptions(extra, downstream.Options{Now: clock.Now, Logger: logrus.NewEntry(l)})
	return regtest.StartCache(t, upstream, extra)
}

// waitSignedGETs polls the origin's counts until it served n signed blob
// GETs.
func waitSignedGETs(t *testing.T, og *testOrigin, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for og.Counts.snapshot().signedGETs < n {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the origin served %d signed blob GETs, want %d", og.Counts.snapshot().signedGETs, n)
		}
	}
}

// Transparent caches never see the manifest: with prefetch on at the
// origin, an image manifest served to a user assigned to a cache makes the
// origin POST the signed URLs of its config and layers to that cache,
// which fetches them with those signatures before the client asks. The
// client's redirected blob requests are then hits. A user assigned to no
// cache sends nothing; the cache's endpoint refuses URLs whose signature
// is not valid for it, starting nothing.
func TestTransparentPrefetch(t *testing.T) {
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{"prefetch": true}, clock)
	cache := prefetchingCache(t, og.URL, og.URL+keysPath, "region-asia", clock)
	img := regtest.RandomImage(31, 3, 32<<10)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	register(t, og, "", "region-asia", cache.URL)
	assign(t, og, "", "alice", "region-asia")
	og.Origin.Probe(t.Context())
	manifest := "/v2/" + img.Repo + "/manifests/" + img.Tag
	accept := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}}

	// bob has no cache: his manifest sends nothing.
	before := og.Counts.snapshot()
	if resp, err := pullClient(og.URL, "bob", "bobpw").Do(t.Context(), http.MethodGet, manifest, accept); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("bob's manifest: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	resp, err := pullClient(og.URL, "alice", "alicepw").Do(t.Context(), http.MethodGet, manifest, accept)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("alice's manifest: %v %v", resp, err)
	}
	resp.Body.Close()
	blobs := 1 + len(img.Layers) // the config and the layers
	waitSignedGETs(t, og, before.signedGETs+blobs)
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := og.Counts.snapshot().signedGETs - before.signedGETs; got != blobs {
		t.Fatalf("prefetch: %d signed GETs at the origin, want %d (bob's manifest sent nothing)", got, blobs)
	}

	// alice's layers: redirected to the cache, served without the origin.
	alice := following(og.URL, "alice", "alicepw")
	mark := og.Counts.snapshot()
	for i, layer := range img.Layers {
		if r := do(t, alice, http.MethodGet, "/v2/"+img.Repo+"/blobs/"+digestOf(layer)); r.Status != http.StatusOK || r.Body != string(layer) {
			t.Fatalf("layer %d: %d, %d bytes", i, r.Status, len(r.Body))
		}
	}
	if got := og.Counts.snapshot().signedGETs - mark.signedGETs; got != 0 {
		t.Fatalf("the pull after the prefetch made %d signed GETs at the origin, want 0", got)
	}

	// The endpoint: a URL not signed for this cache, or tampered with, is
	// refused, and nothing starts.
	other := regtest.RandomImage(32, 1, 32<<10)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", other); err != nil {
		t.Fatal(err)
	}
	path := "/v2/" + other.Repo + "/blobs/" + digestOf(other.Layers[0])
	sign := func(cacheName, digest string) string {
		q := og.Origin.cfg.Signer.Sign(signature.Claims{Method: http.MethodGet, Repository: other.Repo, Digest: digest, Expiry: clock.Now().Add(time.Minute), Cache: cacheName})
		return path + "?" + q.Encode()
	}
	tampered, _ := url.Parse(sign("region-asia", digestOf(other.Layers[0])))
	q := tampered.Query()
	q.Set(signature.ParamSig, strings.Repeat("A", len(q.Get(signature.ParamSig))))
	tampered.RawQuery = q.Encode()
	post := func(urls ...string) int {
		body, _ := json.Marshal(map[string]any{"blobs": urls})
		resp, err := http.Post(cache.URL+"/_content-cache/prefetch", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	mark = og.Counts.snapshot()
	for name, u := range map[string]string{
		"another cache's":            sign("region-europe", digestOf(other.Layers[0])),
		"tampered":                   tampered.String(),
		"unsigned":                   path,
		"another digest than signed": "/v2/" + other.Repo + "/blobs/" + digestOf(other.Config) + "?" + strings.SplitN(sign("region-asia", digestOf(other.Layers[0])), "?", 2)[1],
	} {
		if st := post(u); st != http.StatusUnauthorized {
			t.Errorf("%s URL: %d, want 401", name, st)
		}
	}
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := og.Counts.snapshot().requests - mark.requests; got != 0 {
		t.Fatalf("refused prefetches made %d requests at the origin", got)
	}
	// A valid one is accepted and fetched.
	if st := post(sign("region-asia", digestOf(other.Layers[0]))); st != http.StatusAccepted {
		t.Fatalf("valid prefetch: %d, want 202", st)
	}
	waitSignedGETs(t, og, mark.signedGETs+1)
}
