package downstream_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// rawGet sends one request with exactly the given Authorization header.
func rawGet(t *testing.T, base, method, path, authorization string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header["Accept"] = ociAccept()["Accept"]
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

type authCase struct {
	name, method, path, authorization string
}

// checkSameAnswer asserts the cache answers each case as the origin does,
// and that no private byte leaves the cache when the origin refuses.
func checkSameAnswer(t *testing.T, origin, cache *regtest.Server, cases []authCase, private [][]byte) {
	t.Helper()
	for _, tc := range cases {
		// Twice: the second answer may come from the decision cache.
		for round := range 2 {
			oStatus, oHdr, oBody := rawGet(t, origin.URL, tc.method, tc.path, tc.authorization)
			cStatus, cHdr, cBody := rawGet(t, cache.URL, tc.method, tc.path, tc.authorization)
			if oStatus != cStatus {
				t.Errorf("%s (round %d): cache answered %d, origin %d (%.200q)", tc.name, round, cStatus, oStatus, cBody)
				continue
			}
			if got, want := cHdr.Get("WWW-Authenticate"), oHdr.Get("WWW-Authenticate"); got != want {
				t.Errorf("%s: cache challenge %q, origin %q", tc.name, got, want)
			}
			if oStatus >= 300 {
				for _, p := range private {
					if len(cBody) > 0 && bytes.Contains(cBody, p[:64]) {
						t.Errorf("%s: private bytes left the cache on a refused request", tc.name)
					}
				}
			} else if !bytes.Equal(oBody, cBody) {
				t.Errorf("%s: cache body differs from the origin's", tc.name)
			}
		}
	}
}

func TestAuthorizationTokenOrigin(t *testing.T) {
	ts := regtest.NewTokenServer(t, users, acl)
	origin := regtest.StartOrigin(t, ts.AuthConfig())
	cache := regtest.StartCache(t, origin.URL, map[string]any{"authttl": "1m"})

	secret := regtest.RandomImage(20, 2, 4096)
	secret.Repo, secret.Tag = "private/secret", "v1"
	push(t, origin, secret)
	app := regtest.RandomImage(21, 1, 4096)
	app.Repo, app.Tag = "public/app", "v1"
	push(t, origin, app)

	// Warm the cache with everything, as users who may pull it.
	pullImage(t, &regtest.Client{Base: cache.URL, User: "carol", Pass: "carol-pw"}, secret)
	pullImage(t, &regtest.Client{Base: cache.URL, User: "bob", Pass: "bob-pw"}, app)

	pull := func(user, repo string, lifetime time.Duration) string {
		return "Bearer " + ts.Mint(user, []regtest.ResourceActions{{Type: "repository", Name: repo, Actions: []string{"pull"}}}, lifetime)
	}
	layer := digest.FromBytes(secret.Layers[0]).String()
	secretBlob := "/v2/private/secret/blobs/" + layer
	carol := pull("carol", "private/secret", time.Hour)
	bobApp := pull("bob", "public/app", time.Hour)
	cases := []authCase{
		{"ping anonymous", http.MethodGet, "/v2/", ""},
		{"ping with token", http.MethodGet, "/v2/", carol},
		{"anonymous manifest", http.MethodGet, "/v2/private/secret/manifests/v1", ""},
		{"anonymous blob", http.MethodGet, secretBlob, ""},
		{"anonymous HEAD blob", http.MethodHead, secretBlob, ""},
		{"wrong password", http.MethodGet, secretBlob, basic("carol", "wrong")},
		{"user without access, blob", http.MethodGet, secretBlob, bobApp},
		{"user without access, manifest by tag", http.MethodGet, "/v2/private/secret/manifests/v1", bobApp},
		{"user without access, manifest by digest", http.MethodGet, "/v2/private/secret/manifests/" + secret.Digest.String(), bobApp},
		{"user without access, tags", http.MethodGet, "/v2/private/secret/tags/list", bobApp},
		{"user with access, blob", http.MethodGet, secretBlob, carol},
		{"user with access, manifest", http.MethodGet, "/v2/private/secret/manifests/v1", carol},
		{"user with access, tags", http.MethodGet, "/v2/private/secret/tags/list", carol},
		{"expired token", http.MethodGet, secretBlob, pull("carol", "private/secret", -time.Second)},
		{"private digest through a repository the user may pull", http.MethodGet, "/v2/public/app/blobs/" + layer, bobApp},
		{"private manifest through a repository the user may pull", http.MethodGet, "/v2/public/app/manifests/" + secret.Digest.String(), bobApp},
		{"catalog", http.MethodGet, "/v2/_catalog", carol},
		{"catalog anonymous", http.MethodGet, "/v2/_catalog", ""},
	}
	checkSameAnswer(t, origin, cache, cases, secret.Layers)
}

func TestAuthorizationHtpasswdOrigin(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(22, 1, 4096)
	img.Repo = "private/secret"
	push(t, origin, img)
	pullImage(t, &regtest.Client{Base: cache.URL, User: "carol", Pass: "carol-pw"}, img)

	blob := "/v2/private/secret/blobs/" + digest.FromBytes(img.Layers[0]).String()
	checkSameAnswer(t, origin, cache, []authCase{
		{"ping anonymous", http.MethodGet, "/v2/", ""},
		{"ping", http.MethodGet, "/v2/", basic("bob", "bob-pw")},
		{"anonymous blob", http.MethodGet, blob, ""},
		{"wrong password", http.MethodGet, blob, basic("carol", "nope")},
		{"unknown user", http.MethodGet, blob, basic("mallory", "x")},
		{"valid user", http.MethodGet, blob, basic("carol", "carol-pw")},
		{"anonymous manifest", http.MethodGet, "/v2/private/secret/manifests/latest", ""},
		{"catalog anonymous", http.MethodGet, "/v2/_catalog", ""},
	}, img.Layers)
}

// A decision is reused only for the same credential and repository, and
// not after its lifetime.
func TestDecisionLifetime(t *testing.T) {
	ts := regtest.NewTokenServer(t, users, acl)
	origin := regtest.StartOrigin(t, ts.AuthConfig())
	cache := regtest.StartCache(t, origin.URL, map[string]any{"authttl": "0"})
	img := regtest.RandomImage(23, 1, 4096)
	img.Repo = "private/secret"
	push(t, origin, img)
	c := &regtest.Client{Base: cache.URL, User: "carol", Pass: "carol-pw"}
	pullImage(t, c, img)
	blob := "/v2/private/secret/blobs/" + digest.FromBytes(img.Layers[0]).String()
	before := origin.Counts.Get(http.MethodHead, blob)
	pullImage(t, c, img)
	if got := origin.Counts.Get(http.MethodHead, blob) - before; got != 1 {
		t.Fatalf("with authttl 0 a warm pull asked the origin %d times for the layer, want 1", got)
	}
	if got := origin.Counts.Get(http.MethodGet, blob); got != 1 {
		t.Fatalf("origin saw %d GETs of the layer, want 1 (served from the cache)", got)
	}
}
