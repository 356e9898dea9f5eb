package origin

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"
)

// TestTransparentChain: origin -> a nearer cache -> the user's cache. The
// user's cache forwards its miss with the signature; the nearer cache
// accepts it because the signature names one of its downstreams, and
// forwards it to the origin. A warm pull reaches neither.
func TestTransparentChain(t *testing.T) {
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	near, nearLogs := signingCache(t, og.URL, og.URL+keysPath, "region-near", []string{"region-asia"}, clock)
	edge, edgeLogs := signingCache(t, near.URL, og.URL+keysPath, "region-asia", nil, clock)
	img := regtest.RandomImage(5, 1, 32<<10)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	register(t, og, "", "region-near", near.URL)
	register(t, og, "", "region-asia", edge.URL)
	register(t, og, "", "region-us", "http://127.0.0.1:9")
	assign(t, og, "", "alice", "region-asia")
	og.Origin.Probe(t.Context())
	layer := img.Layers[0]
	blobPath := "/v2/" + img.Repo + "/blobs/" + digestOf(layer)

	alice := following(og.URL, "alice", "alicepw")
	for _, pull := range []string{"cold", "warm"} {
		o0 := og.Counts.snapshot()
		n0 := near.Counts.Get(http.MethodGet, blobPath)
		if r := do(t, alice, http.MethodGet, blobPath); r.Status != http.StatusOK || r.Body != string(layer) {
			t.Fatalf("%s pull: %d, %d bytes", pull, r.Status, len(r.Body))
		}
		o1 := og.Counts.snapshot()
		want := 0
		if pull == "cold" {
			want = 1
		}
		if got := near.Counts.Get(http.MethodGet, blobPath) - n0; got != want {
			t.Errorf("%s pull: the nearer cache got %d blob GETs, want %d", pull, got, want)
		}
		if o1.signedGETs-o0.signedGETs != want || o1.blobGETs-o0.blobGETs != want {
			t.Errorf("%s pull: the origin served %d blob GETs (%d signed), want %d signed", pull, o1.blobGETs-o0.blobGETs, o1.signedGETs-o0.signedGETs, want)
		}
		if o1.signedWithCred != 0 {
			t.Errorf("a credential travelled with the signature")
		}
		// Both caches commit after their client's last byte: the warm
		// pull is a hit once they did.
		for _, c := range []*regtest.Server{edge, near} {
			if err := c.WaitFillsDone(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := edgeLogs.WaitFor(ctx, "result=hit", digestOf(layer)); err != nil {
		t.Errorf("the user's cache logged no hit: %v", err)
	}
	if _, err := nearLogs.WaitFor(ctx, "result=miss", digestOf(layer)); err != nil {
		t.Errorf("the nearer cache logged no miss: %v", err)
	}

	// The nearer cache accepts only its downstreams' signatures (and its own).
	for name, tc := range map[string]struct {
		cache string
		want  int
	}{
		"a downstream's":  {"region-asia", http.StatusOK},
		"its own":         {"region-near", http.StatusOK},
		"another cache's": {"region-us", http.StatusUnauthorized},
	} {
		q := originSigner(t).Sign(signature.Claims{Method: http.MethodGet, Repository: img.Repo, Digest: digestOf(layer), Expiry: clock.Now().Add(time.Minute), Cache: tc.cache})
		resp := send(t, http.MethodGet, near.URL+blobPath+"?"+q.Encode())
		if b := body(resp); resp.StatusCode != tc.want {
			t.Errorf("%s signature at the nearer cache: %d, want %d (%s)", name, resp.StatusCode, tc.want, strings.TrimSpace(b))
		}
	}
}

// TestTransparentDeadCache: once the user's cache stops answering, the next
// probe round sends the user's pulls to the origin directly.
func TestTransparentDeadCache(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	alice := following(s.og.URL, "alice", "alicepw")
	layer := s.img.Layers[0]
	if r := do(t, alice, http.MethodGet, s.blobPath); r.Status != http.StatusOK || r.Body != string(layer) {
		t.Fatalf("through the cache: %d", r.Status)
	}
	s.cache.Kill()
	s.og.Origin.Probe(t.Context())
	o0 := s.og.Counts.snapshot()
	if r := do(t, alice, http.MethodGet, s.blobPath); r.Status != http.StatusOK || r.Body != string(layer) {
		t.Fatalf("after the cache died: %d", r.Status)
	}
	if o1 := s.og.Counts.snapshot(); o1.blobGETs-o0.blobGETs != 1 || o1.signedGETs != o0.signedGETs {
		t.Errorf("after the cache died: the origin served %d blob GETs (%d signed), want 1 direct", o1.blobGETs-o0.blobGETs, o1.signedGETs-o0.signedGETs)
	}
}

// TestTransparentDeadCacheProbed is TestTransparentDeadCache with the
// origin's own prober: the first probe round after the cache died, at
// most one probeinterval later, sends the user's pulls to the origin.
func TestTransparentDeadCacheProbed(t *testing.T) {
	clock := &regtest.Clock{}
	rounds := make(chan struct{}, 1)
	const interval = 200 * time.Millisecond
	og := startOriginWith(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{"probeinterval": interval.String()},
		Options{Now: clock.Now, AfterProbe: func() {
			select {
			case rounds <- struct{}{}:
			default:
			}
		}})
	cache, _ := signingCache(t, og.URL, og.URL+keysPath, "region-asia", nil, clock)
	img := regtest.RandomImage(11, 1, 8<<10)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	register(t, og, "", "region-asia", cache.URL) // probed at once (the API kicks the prober)
	assign(t, og, "", "alice", "region-asia")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	waitRound := func(healthy bool) {
		t.Helper()
		for og.Origin.isHealthy("region-asia") != healthy {
			select {
			case <-rounds:
			case <-ctx.Done():
				t.Fatalf("region-asia never became healthy=%v", healthy)
			}
		}
	}
	waitRound(true)
	blobPath := "/v2/" + img.Repo + "/blobs/" + digestOf(img.Layers[0])
	alice := following(og.URL, "alice", "alicepw")
	if r := do(t, alice, http.MethodGet, blobPath); r.Status != http.StatusOK || og.Counts.snapshot().signedGETs != 1 {
		t.Fatalf("through the cache: %d, %d signed fills", r.Status, og.Counts.snapshot().signedGETs)
	}
	cache.Kill()
	killed := time.Now()
	waitRound(false)
	if took := time.Since(killed); took > interval+5*time.Second {
		t.Errorf("the origin noticed the dead cache after %v, want within the probe interval (%v, plus the probe's own time)", took, interval)
	}
	o0 := og.Counts.snapshot()
	if r := do(t, alice, http.MethodGet, blobPath); r.Status != http.StatusOK || r.Body != string(img.Layers[0]) {
		t.Fatalf("after the cache died: %d", r.Status)
	}
	if o1 := og.Counts.snapshot(); o1.blobGETs-o0.blobGETs != 1 || o1.signedGETs != o0.signedGETs {
		t.Errorf("after the cache died: %d blob GETs at the origin (%d signed), want 1 direct", o1.blobGETs-o0.blobGETs, o1.signedGETs-o0.signedGETs)
	}
}
