package origin

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"
)

var testUsers = map[string]string{"admin": "adminpw", "alice": "alicepw", "bob": "bobpw"}

// verifyRedirect checks that r is a 307 to cacheURL's blob path, whose
// signature verifies with the origin's published keys for cacheName, and
// returns the query.
func verifyRedirect(t *testing.T, og *testOrigin, r result, cacheURL, cacheName, repo, dgst string, now time.Time) url.Values {
	t.Helper()
	if r.Status != http.StatusTemporaryRedirect {
		t.Fatalf("status %d, want 307; body %q", r.Status, r.Body)
	}
	loc, err := url.Parse(r.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := loc.Scheme+"://"+loc.Host, cacheURL; got != want {
		t.Fatalf("redirect to %s, want %s", got, want)
	}
	if want := "/v2/" + repo + "/blobs/" + dgst; loc.Path != want {
		t.Fatalf("redirect path %s, want %s", loc.Path, want)
	}
	keys := api(t, og.URL, "", "", http.MethodGet, keysPath, "")
	if keys.Status != http.StatusOK || keys.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("keys: %d %s %q", keys.Status, keys.Header.Get("Content-Type"), keys.Body)
	}
	v, err := signature.ParseJWKS([]byte(keys.Body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(http.MethodGet, repo, dgst, loc.Query(), now, cacheName); err != nil {
		t.Fatalf("the redirect's signature does not verify: %v", err)
	}
	return loc.Query()
}

// TestRedirectHtpasswd is the whole flow on an origin with htpasswd auth:
// an admin registers a cache, a user picks it, their blob GETs go there
// signed; everyone else, and every other request, is served as before.
func TestRedirectHtpasswd(t *testing.T) {
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	cache := fakeCache(t)
	img := regtest.RandomImage(1, 2, 4096)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	layer := img.Layers[0]
	blobPath := "/v2/" + img.Repo + "/blobs/" + digestOf(layer)

	if r := api(t, og.URL, "admin", "adminpw", http.MethodPost, cachesPath, `{"name": "region-asia", "host": "`+cache.URL+`"}`); r.Status != http.StatusCreated {
		t.Fatalf("create cache: %d %q", r.Status, r.Body)
	}
	if r := api(t, og.URL, "alice", "alicepw", http.MethodPatch, accountsPrefix+"alice/settings", `{"contentCache": "region-asia"}`); r.Status != http.StatusOK || !strings.Contains(r.Body, `"contentCache":"region-asia"`) {
		t.Fatalf("alice picks region-asia: %d %q", r.Status, r.Body)
	}

	alice := pullClient(og.URL, "alice", "alicepw")
	// Not probed yet: served directly, never sent to an unchecked cache.
	if r := do(t, alice, http.MethodGet, blobPath); r.Status != http.StatusOK || r.Body != string(layer) {
		t.Fatalf("before the first probe: %d, %d bytes", r.Status, len(r.Body))
	}
	og.Origin.Probe(t.Context())

	r := do(t, alice, http.MethodGet, blobPath)
	q := verifyRedirect(t, og, r, cache.URL, "region-asia", img.Repo, digestOf(layer), clock.Now())
	if r.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", r.Header.Get("Cache-Control"))
	}
	exp := q.Get(signature.ParamExpiry)
	if want := clock.Now().Add(DefaultSignatureTTL).Unix(); exp != itoa(want) {
		t.Errorf("expiry %s, want now+%s (%d)", exp, DefaultSignatureTTL, want)
	}

	// Bob has no cache: the origin serves the bytes.
	bob := pullClient(og.URL, "bob", "bobpw")
	if r := do(t, bob, http.MethodGet, blobPath); r.Status != http.StatusOK || r.Body != string(layer) {
		t.Fatalf("bob: %d, %d bytes", r.Status, len(r.Body))
	}
	// HEAD, manifests and tags are the origin's, even for alice.
	if r := do(t, alice, http.MethodHead, blobPath); r.Status != http.StatusOK || r.Header.Get("Location") != "" {
		t.Fatalf("alice HEAD blob: %d, Location %q", r.Status, r.Header.Get("Location"))
	}
	if r := do(t, alice, http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag); r.Status != http.StatusOK || !bytes.Equal([]byte(r.Body), img.Manifest) {
		t.Fatalf("alice GET manifest: %d", r.Status)
	}
	if r := do(t, alice, http.MethodGet, "/v2/"+img.Repo+"/tags/list"); r.Status != http.StatusOK {
		t.Fatalf("alice tags: %d", r.Status)
	}
	// A missing blob is the origin's 404, not a redirect.
	if r := do(t, alice, http.MethodGet, "/v2/"+img.Repo+"/blobs/"+digestOf([]byte("absent"))); r.Status != http.StatusNotFound {
		t.Fatalf("alice GET absent blob: %d", r.Status)
	}

	// No redirect before auth: no credentials, or wrong ones, get the 401.
	for name, c := range map[string]*regtest.Client{
		"anonymous":      pullClient(og.URL, "", ""),
		"wrong password": pullClient(og.URL, "alice", "nope"),
	} {
		r := do(t, c, http.MethodGet, blobPath)
		if r.Status != http.StatusUnauthorized || r.Header.Get("Location") != "" || r.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %d, Location %q, WWW-Authenticate %q; want the origin's 401", name, r.Status, r.Header.Get("Location"), r.Header.Get("WWW-Authenticate"))
		}
	}

	m := og.Origin.metrics
	if got := testutil.ToFloat64(m.redirects.WithLabelValues("region-asia")); got != 1 {
		t.Errorf("redirects{region-asia} = %v, want 1", got)
	}
	// alice before the probe; bob.
	if got := testutil.ToFloat64(m.direct.WithLabelValues(directUnhealthy)); got != 1 {
		t.Errorf("direct{unhealthy} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.direct.WithLabelValues(directUnassigned)); got != 1 {
		t.Errorf("direct{unassigned} = %v, want 1", got)
	}

	// The signature's lifetime is the clock's: after it, a cache refuses.
	clock.Advance(DefaultSignatureTTL)
	v, _ := signature.ParseJWKS([]byte(api(t, og.URL, "", "", http.MethodGet, keysPath, "").Body))
	if _, err := v.Verify(http.MethodGet, img.Repo, digestOf(layer), q, clock.Now(), "region-asia"); !errors.Is(err, signature.ErrExpired) {
		t.Fatalf("after the TTL: %v, want expired", err)
	}
}

// TestDeadCacheServedDirectly: once a probe finds the cache gone, its
// users are served by the origin; when it is back, redirected again.
func TestDeadCacheServedDirectly(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{
		"caches": []any{map[any]any{"name": "lan", "host": cache.URL}},
		"users":  map[any]any{"alice": "lan"},
	}, clock)
	img := regtest.RandomImage(2, 1, 1024)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	blobPath := "/v2/" + img.Repo + "/blobs/" + digestOf(img.Layers[0])
	alice := pullClient(og.URL, "alice", "alicepw")

	og.Origin.Probe(t.Context())
	verifyRedirect(t, og, do(t, alice, http.MethodGet, blobPath), cache.URL, "lan", img.Repo, digestOf(img.Layers[0]), clock.Now())
	if got := testutil.ToFloat64(og.Origin.metrics.up.WithLabelValues("lan")); got != 1 {
		t.Errorf("cache_up{lan} = %v, want 1", got)
	}

	cache.CloseClientConnections()
	cache.Close()
	// Until the next probe the origin still believes in it.
	if r := do(t, alice, http.MethodGet, blobPath); r.Status != http.StatusTemporaryRedirect {
		t.Fatalf("before the probe noticed: %d", r.Status)
	}
	og.Origin.Probe(t.Context())
	if r := do(t, alice, http.MethodGet, blobPath); r.Status != http.StatusOK || r.Body != string(img.Layers[0]) {
		t.Fatalf("after the probe noticed: %d, %d bytes", r.Status, len(r.Body))
	}
	if got := testutil.ToFloat64(og.Origin.metrics.up.WithLabelValues("lan")); got != 0 {
		t.Errorf("cache_up{lan} = %v, want 0", got)
	}
	if got := testutil.ToFloat64(og.Origin.metrics.direct.WithLabelValues(directUnhealthy)); got != 1 {
		t.Errorf("direct{unhealthy} = %v, want 1", got)
	}
	caches := api(t, og.URL, "alice", "alicepw", http.MethodGet, cachesPath, "")
	if !strings.Contains(caches.Body, `"healthy":false`) {
		t.Errorf("the list does not show the cache unhealthy: %s", caches.Body)
	}
}

// TestNetworkRules: a client with no cache of its own goes to its
// network's cache; a user's own setting wins over the network.
func TestNetworkRules(t *testing.T) {
	clock := &regtest.Clock{}
	lan, asia := fakeCache(t), fakeCache(t)
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{
		"caches": []any{
			map[any]any{"name": "lan", "host": lan.URL},
			map[any]any{"name": "asia", "host": asia.URL},
			map[any]any{"name": "elsewhere", "host": "http://192.0.2.1:5000"},
		},
		"networks": []any{
			map[any]any{"cidr": "10.0.0.0/8", "cache": "elsewhere"},
			map[any]any{"cidr": "127.0.0.0/8", "cache": "lan"},
		},
	}, clock)
	img := regtest.RandomImage(3, 1, 1024)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	dgst := digestOf(img.Layers[0])
	blobPath := "/v2/" + img.Repo + "/blobs/" + dgst
	og.Origin.Probe(t.Context())

	verifyRedirect(t, og, do(t, pullClient(og.URL, "bob", "bobpw"), http.MethodGet, blobPath), lan.URL, "lan", img.Repo, dgst, clock.Now())
	if r := api(t, og.URL, "alice", "alicepw", http.MethodPatch, accountsPrefix+"alice/settings", `{"contentCache": "asia"}`); r.Status != http.StatusOK {
		t.Fatalf("alice picks asia: %d %q", r.Status, r.Body)
	}
	verifyRedirect(t, og, do(t, pullClient(og.URL, "alice", "alicepw"), http.MethodGet, blobPath), asia.URL, "asia", img.Repo, dgst, clock.Now())
}

// TestNetworkRuleNoMatch: a client outside every network, without a cache
// of its own, is served directly.
func TestNetworkRuleNoMatch(t *testing.T) {
	clock := &regtest.Clock{}
	lan := fakeCache(t)
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{
		"caches":   []any{map[any]any{"name": "lan", "host": lan.URL}},
		"networks": []any{map[any]any{"cidr": "10.0.0.0/8", "cache": "lan"}},
	}, clock)
	img := regtest.RandomImage(4, 1, 1024)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	og.Origin.Probe(t.Context())
	if r := do(t, pullClient(og.URL, "bob", "bobpw"), http.MethodGet, "/v2/"+img.Repo+"/blobs/"+digestOf(img.Layers[0])); r.Status != http.StatusOK {
		t.Fatalf("bob from 127.0.0.1: %d, want 200", r.Status)
	}
}

// TestRedirectToken: the same on an origin with token auth; a user the
// token server refuses gets the origin's 401, never a redirect.
func TestRedirectToken(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	ts := regtest.NewTokenServer(t, map[string]string{"admin": "adminpw", "alice": "alicepw", "mallory": "mallorypw"}, func(user, repo string) []string {
		switch user {
		case "admin":
			return []string{"*"}
		case "alice":
			return []string{"pull"}
		}
		return nil
	})
	og := startOrigin(t, ts.AuthConfig(), "", nil, clock)
	img := regtest.RandomImage(5, 1, 2048)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	dgst := digestOf(img.Layers[0])
	blobPath := "/v2/" + img.Repo + "/blobs/" + dgst

	// The API takes the origin's own tokens; without one, its challenge.
	if r := api(t, og.URL, "", "", http.MethodPost, cachesPath, `{"name":"region-us","host":"`+cache.URL+`"}`); r.Status != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer ") {
		t.Fatalf("anonymous create: %d, WWW-Authenticate %q", r.Status, r.Header.Get("WWW-Authenticate"))
	}
	if r := api(t, og.URL, "Bearer "+ts.Mint("alice", nil, time.Minute), "", http.MethodPost, cachesPath, `{"name":"region-us","host":"`+cache.URL+`"}`); r.Status != http.StatusForbidden {
		t.Fatalf("alice create: %d %q", r.Status, r.Body)
	}
	admin := "Bearer " + ts.Mint("admin", nil, time.Minute)
	if r := api(t, og.URL, admin, "", http.MethodPost, cachesPath, `{"name":"region-us","host":"`+cache.URL+`"}`); r.Status != http.StatusCreated {
		t.Fatalf("admin create: %d %q", r.Status, r.Body)
	}
	for _, u := range []string{"alice", "mallory"} {
		if r := api(t, og.URL, admin, "", http.MethodPatch, accountsPrefix+u+"/settings", `{"contentCache":"region-us"}`); r.Status != http.StatusOK {
			t.Fatalf("admin sets %s: %d %q", u, r.Status, r.Body)
		}
	}
	og.Origin.Probe(t.Context())

	verifyRedirect(t, og, do(t, pullClient(og.URL, "alice", "alicepw"), http.MethodGet, blobPath), cache.URL, "region-us", img.Repo, dgst, clock.Now())
	r := do(t, pullClient(og.URL, "mallory", "mallorypw"), http.MethodGet, blobPath)
	if r.Status != http.StatusUnauthorized || r.Header.Get("Location") != "" {
		t.Fatalf("mallory (no pull right): %d, Location %q; want the origin's 401", r.Status, r.Header.Get("Location"))
	}
}

// TestNoAuthOrigin: without an auth section only the configuration assigns
// caches (by network), and the API refuses to act for anyone.
func TestNoAuthOrigin(t *testing.T) {
	clock := &regtest.Clock{}
	lan := fakeCache(t)
	og := startOrigin(t, configuration.Auth{}, "", map[string]any{
		"caches":   []any{map[any]any{"name": "lan", "host": lan.URL}},
		"networks": []any{map[any]any{"cidr": "127.0.0.1/32", "cache": "lan"}},
	}, clock)
	img := regtest.RandomImage(6, 1, 1024)
	if err := regtest.Push(t.Context(), og.URL, "", "", img); err != nil {
		t.Fatal(err)
	}
	og.Origin.Probe(t.Context())
	dgst := digestOf(img.Layers[0])
	verifyRedirect(t, og, do(t, pullClient(og.URL, "", ""), http.MethodGet, "/v2/"+img.Repo+"/blobs/"+dgst), lan.URL, "lan", img.Repo, dgst, clock.Now())
	if r := api(t, og.URL, "", "", http.MethodPost, cachesPath, `{"name":"x","host":"http://x"}`); r.Status != http.StatusForbidden {
		t.Fatalf("create without auth: %d %q", r.Status, r.Body)
	}
}

// TestProbeTLS: a cache with a certificate from a private CA is alive only
// if option cas lists that CA.
func TestProbeTLS(t *testing.T) {
	ca := regtest.NewCA(t)
	cache := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	cache.TLS = ca.ServerTLS(t)
	cache.StartTLS()
	t.Cleanup(cache.Close)
	caches := []any{map[any]any{"name": "tls", "host": cache.URL}}
	for _, tc := range []struct {
		name string
		cas  []any
		want bool
	}{{"without cas", nil, false}, {"with cas", []any{ca.File}, true}} {
		opts := map[string]any{"caches": caches}
		if tc.cas != nil {
			opts["cas"] = tc.cas
		}
		og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", opts, &regtest.Clock{})
		og.Origin.Probe(t.Context())
		if got := og.Origin.isHealthy("tls"); got != tc.want {
			t.Errorf("%s: healthy %v, want %v", tc.name, got, tc.want)
		}
	}
}
