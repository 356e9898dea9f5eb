package regtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// newRegistry serves a real distribution registry with the given auth and
// storage driver ("filesystem" or "inmemory") and returns its base URL.
func newRegistry(t *testing.T, auth configuration.Auth, driver string) string {
	t.Helper()
	params := configuration.Parameters{}
	if driver == "filesystem" {
		params["rootdirectory"] = t.TempDir()
	}
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			driver: params,
			// The purger is a background goroutine we have no use for.
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
		Auth: auth,
	}
	cfg.HTTP.Secret = "regtest-secret"
	app := handlers.NewApp(t.Context(), cfg)
	srv := httptest.NewServer(app)
	t.Cleanup(func() {
		srv.Close()
		_ = app.Shutdown()
	})
	return srv.URL
}

var testUsers = map[string]string{"alice": "alice-pw", "bob": "bob-pw"}

// testACL: alice may push anywhere, bob may only pull, anonymous may pull
// public/*.
func testACL(user, repo string) []string {
	switch {
	case user == "alice":
		return []string{"pull", "push"}
	case user == "bob":
		return []string{"pull"}
	case user == "" && strings.HasPrefix(repo, "public/"):
		return []string{"pull"}
	}
	return nil
}

const manifestAccept = v1.MediaTypeImageManifest + ", " + v1.MediaTypeImageIndex

func get(t *testing.T, c *Client, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Do(t.Context(), http.MethodGet, path, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp, body
}

func TestTokenPushPull(t *testing.T) {
	ts := NewTokenServer(t, testUsers, testACL)
	base := newRegistry(t, ts.AuthConfig(), "filesystem")
	if u, _ := url.Parse(ts.URL); u.Hostname() != "localhost" {
		t.Fatalf("realm host = %q, want localhost", u.Hostname())
	}

	img := RandomImage(1, 2, 4096)
	img.Repo, img.Tag = "team/app", "v1"
	if err := Push(t.Context(), base, "alice", "alice-pw", img); err != nil {
		t.Fatalf("push: %v", err)
	}
	// Pushing again is a no-op for blobs and must still succeed.
	if err := Push(t.Context(), base, "alice", "alice-pw", img); err != nil {
		t.Fatalf("second push: %v", err)
	}

	c := &Client{Base: base, User: "bob", Pass: "bob-pw"}
	resp, body := get(t, c, "/v2/team/app/manifests/v1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET manifest: %d %s", resp.StatusCode, body)
	}
	if !bytes.Equal(body, img.Manifest) {
		t.Fatalf("manifest differs:\n got %s\nwant %s", body, img.Manifest)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != img.Digest.String() {
		t.Fatalf("digest = %s, want %s", got, img.Digest)
	}

	// Same repo, same kind of request: the cached token must be reused.
	before := ts.Requests()
	var m v1.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	resp, body = get(t, c, "/v2/team/app/blobs/"+m.Layers[1].Digest.String())
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Layers[1]) {
		t.Fatalf("GET layer: %d, %d bytes (want %d)", resp.StatusCode, len(body), len(img.Layers[1]))
	}
	if after := ts.Requests(); after != before {
		t.Fatalf("token server hit %d more times; want token reuse", after-before)
	}
}

func TestTokenPullOnlyUserCannotPush(t *testing.T) {
	ts := NewTokenServer(t, testUsers, testACL)
	base := newRegistry(t, ts.AuthConfig(), "inmemory")

	img := RandomImage(2, 1, 100)
	err := Push(t.Context(), base, "bob", "bob-pw", img)
	var he *HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("push as pull-only user: err = %v, want *HTTPError", err)
	}
	if he.StatusCode != http.StatusUnauthorized || !strings.Contains(he.URL, base) {
		t.Fatalf("push as pull-only user: %v", he)
	}
	_, params := ParseChallenge(he.Header.Get("WWW-Authenticate"))
	if params["error"] != "insufficient_scope" {
		t.Fatalf("challenge error = %q, want insufficient_scope (%v)", params["error"], he)
	}
}

func TestTokenWrongPassword(t *testing.T) {
	ts := NewTokenServer(t, testUsers, testACL)
	base := newRegistry(t, ts.AuthConfig(), "inmemory")

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"?service=x&scope=repository:a:pull", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("alice", "wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token with wrong password: %d, want 401", resp.StatusCode)
	}

	// Push surfaces the token server's refusal.
	err = Push(t.Context(), base, "alice", "wrong", RandomImage(3, 1, 10))
	var he *HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(he.URL, ts.URL) {
		t.Fatalf("push with wrong password: %v", err)
	}
}

func TestMintedTokens(t *testing.T) {
	ts := NewTokenServer(t, testUsers, testACL)
	base := newRegistry(t, ts.AuthConfig(), "inmemory")
	img := RandomImage(4, 1, 10)
	if err := Push(t.Context(), base, "alice", "alice-pw", img); err != nil {
		t.Fatal(err)
	}

	pull := []ResourceActions{{Type: "repository", Name: img.Repo, Actions: []string{"pull"}}}
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		want     int
	}{
		{"valid", time.Minute, http.StatusOK},
		// Within distribution's 60s leeway; Mint must still make it expired.
		{"just expired", -time.Second, http.StatusUnauthorized},
		{"long expired", -time.Hour, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v2/"+img.Repo+"/manifests/"+img.Tag, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Accept", manifestAccept)
			req.Header.Set("Authorization", "Bearer "+ts.Mint("bob", pull, tc.lifetime))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.want, resp.Header.Get("WWW-Authenticate"))
			}
			if tc.want == http.StatusUnauthorized {
				if _, p := ParseChallenge(resp.Header.Get("WWW-Authenticate")); p["error"] != "invalid_token" {
					t.Fatalf("challenge error = %q, want invalid_token", p["error"])
				}
			}
		})
	}
}

// TestTokenServerScopes checks scope parsing and ACL intersection by
// decoding the issued claims directly.
func TestTokenServerScopes(t *testing.T) {
	ts := NewTokenServer(t, testUsers, testACL)

	claims := func(t *testing.T, user, pass, query string) []ResourceActions {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, ts.URL+"?"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := readExpect(resp, http.StatusOK)
		if err != nil {
			t.Fatal(err)
		}
		var tr struct {
			Token       string `json:"token"`
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
			IssuedAt    string `json:"issued_at"`
		}
		if err := json.Unmarshal(body, &tr); err != nil {
			t.Fatal(err)
		}
		if tr.Token == "" || tr.AccessToken != tr.Token || tr.ExpiresIn <= 0 || tr.IssuedAt == "" {
			t.Fatalf("incomplete token response: %s", body)
		}
		parts := strings.Split(tr.Token, ".")
		if len(parts) != 3 {
			t.Fatalf("not a compact JWS: %q", tr.Token)
		}
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var cs struct {
			Access []ResourceActions `json:"access"`
		}
		if err := json.Unmarshal(payload, &cs); err != nil {
			t.Fatal(err)
		}
		for _, a := range cs.Access {
			slices.Sort(a.Actions)
		}
		return cs.Access
	}

	q := url.Values{"scope": {
		"repository:a/b:pull,push repository:c:pull",
		"repository:d:push",
		"registry:catalog:*",
	}}.Encode()
	got := claims(t, "bob", "bob-pw", q)
	want := []ResourceActions{
		{Type: "repository", Name: "a/b", Actions: []string{"pull"}},
		{Type: "repository", Name: "c", Actions: []string{"pull"}},
	}
	if !equalAccess(got, want) {
		t.Fatalf("bob: got %+v, want %+v", got, want)
	}

	got = claims(t, "alice", "alice-pw", q)
	want = []ResourceActions{
		{Type: "repository", Name: "a/b", Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "c", Actions: []string{"pull"}},
		{Type: "repository", Name: "d", Actions: []string{"push"}},
	}
	if !equalAccess(got, want) {
		t.Fatalf("alice: got %+v, want %+v", got, want)
	}

	got = claims(t, "", "", url.Values{"scope": {"repository:public/x:pull,push", "repository:private:pull"}}.Encode())
	want = []ResourceActions{{Type: "repository", Name: "public/x", Actions: []string{"pull"}}}
	if !equalAccess(got, want) {
		t.Fatalf("anonymous: got %+v, want %+v", got, want)
	}
}

func equalAccess(a, b []ResourceActions) bool {
	return slices.EqualFunc(a, b, func(x, y ResourceActions) bool {
		return x.Type == y.Type && x.Name == y.Name && slices.Equal(x.Actions, y.Actions)
	})
}

func TestHtpasswdPushPull(t *testing.T) {
	base := newRegistry(t, HtpasswdAuth(t, testUsers), "inmemory")

	img := RandomImage(5, 3, 1000)
	if err := Push(t.Context(), base, "bob", "bob-pw", img); err != nil {
		t.Fatalf("push: %v", err)
	}
	resp, body := get(t, &Client{Base: base, User: "alice", Pass: "alice-pw"}, "/v2/"+img.Repo+"/manifests/"+img.Tag)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Manifest) {
		t.Fatalf("GET manifest: %d %s", resp.StatusCode, body)
	}

	resp, _ = get(t, &Client{Base: base, User: "alice", Pass: "nope"}, "/v2/"+img.Repo+"/manifests/"+img.Tag)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET with wrong password: %d, want 401", resp.StatusCode)
	}
}

func TestPushIndex(t *testing.T) {
	ts := NewTokenServer(t, testUsers, testACL)
	base := newRegistry(t, ts.AuthConfig(), "filesystem")

	var imgs []Image
	for seed := int64(10); seed < 12; seed++ {
		img := RandomImage(seed, 1, 64)
		img.Repo, img.Tag = "multi", "img"+string(rune('0'+seed-10))
		if err := Push(t.Context(), base, "alice", "alice-pw", img); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	dgst, err := PushIndex(t.Context(), base, "alice", "alice-pw", "multi", "index", imgs)
	if err != nil {
		t.Fatal(err)
	}

	resp, body := get(t, &Client{Base: base, User: "bob", Pass: "bob-pw"}, "/v2/multi/manifests/index")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET index: %d %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != dgst.String() {
		t.Fatalf("digest = %s, want %s", got, dgst)
	}
	var idx v1.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatal(err)
	}
	if idx.MediaType != v1.MediaTypeImageIndex || len(idx.Manifests) != 2 || idx.Manifests[1].Digest != imgs[1].Digest {
		t.Fatalf("unexpected index %s", body)
	}
}

func TestRandomImageDeterministic(t *testing.T) {
	a, b, c := RandomImage(7, 2, 32), RandomImage(7, 2, 32), RandomImage(8, 2, 32)
	if a.Digest != b.Digest || !bytes.Equal(a.Layers[1], b.Layers[1]) {
		t.Fatal("same seed gave different images")
	}
	if a.Digest == c.Digest || bytes.Equal(a.Layers[0], c.Layers[0]) {
		t.Fatal("different seeds gave the same image")
	}
	if RandomImage(1, 0, 0).Digest == RandomImage(2, 0, 0).Digest {
		t.Fatal("layerless images of different seeds collide")
	}
	if len(a.Layers[0]) != 32 {
		t.Fatalf("layer size %d, want 32", len(a.Layers[0]))
	}
}

func TestParseChallenge(t *testing.T) {
	scheme, p := ParseChallenge(`Bearer realm="http://localhost:1/token",service="reg",scope="repository:a:pull,push repository:b:pull",error="insufficient_scope"`)
	if scheme != "bearer" || p["realm"] != "http://localhost:1/token" || p["service"] != "reg" ||
		p["scope"] != "repository:a:pull,push repository:b:pull" || p["error"] != "insufficient_scope" {
		t.Fatalf("got %q %v", scheme, p)
	}
	scheme, p = ParseChallenge(`Basic realm="a \"quoted\" realm", charset=UTF-8`)
	if scheme != "basic" || p["realm"] != `a "quoted" realm` || p["charset"] != "UTF-8" {
		t.Fatalf("got %q %v", scheme, p)
	}
}
