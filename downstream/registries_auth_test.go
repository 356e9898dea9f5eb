package downstream_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// hubACL imitates Docker Hub: anyone, anonymous included, may pull
// library/*; alice may pull private/* too; cache-bot (the account of the
// anonymous option) may pull library/* and bot/*.
func hubACL(user, repo string) []string {
	switch {
	case user == "alice":
		return []string{"*"}
	case strings.HasPrefix(repo, "library/"):
		return []string{"pull"}
	case user == "cache-bot" && strings.HasPrefix(repo, "bot/"):
		return []string{"pull"}
	}
	return nil
}

// startHub is a registry posing as Docker Hub: token auth whose challenge
// names the service registry.docker.io, and a token server imitating
// auth.docker.io (on localhost).
func startHub(t *testing.T) (*regtest.Server, *regtest.TokenServer) {
	t.Helper()
	ts := regtest.NewTokenServer(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw", "cache-bot": "bot-token"}, hubACL)
	ts.Service = "registry.docker.io"
	return regtest.StartOrigin(t, ts.AuthConfig()), ts
}

// Docker Hub's token flow through the cache, with ns=docker.io: the
// client gets the registry's challenge unchanged (realm, service
// registry.docker.io, scope repository:library/x:pull), fetches its token
// at the realm, and pulls with it.
func TestRegistriesDockerHubTokenFlow(t *testing.T) {
	private := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	hub, ts := startHub(t)
	img := regtest.RandomImage(2310, 2, 2000)
	img.Repo = "library/x"
	pushAs(t, hub, "alice", "alice-pw", img)
	cache := regtest.StartCache(t, private.URL, map[string]any{
		"registries": map[string]any{"docker.io": map[string]any{"upstreams": []any{hub.URL}}},
	})
	path := "/v2/library/x/manifests/" + img.Tag
	o := ask(t, hub.URL, http.MethodGet, path, ociAccept())
	c := ask(t, cache.URL, http.MethodGet, path+"?ns=docker.io", ociAccept())
	want := `Bearer realm="` + ts.URL + `",service="registry.docker.io",scope="repository:library/x:pull"`
	if o.status != http.StatusUnauthorized || o.header.Get("WWW-Authenticate") != want {
		t.Fatalf("the imitation hub answered %d %q, want 401 %q", o.status, o.header.Get("WWW-Authenticate"), want)
	}
	if c.status != o.status || c.header.Get("WWW-Authenticate") != want || c.header.Get("OCI-Namespace") != "docker.io" {
		t.Fatalf("cache answered %d %q (OCI-Namespace %q), want the hub's 401 %q", c.status, c.header.Get("WWW-Authenticate"), c.header.Get("OCI-Namespace"), want)
	}
	// An anonymous client of the token flow, and alice: both pull it.
	for _, cl := range []*regtest.Client{{Base: cache.URL}, {Base: cache.URL, User: "alice", Pass: "alice-pw"}} {
		tokens := ts.Requests()
		status, _, body := get(t, cl, http.MethodGet, path+"?ns=docker.io", ociAccept())
		if status != http.StatusOK || !bytes.Equal(body, img.Manifest) {
			t.Fatalf("%q: manifest %d", cl.User, status)
		}
		for _, b := range append([][]byte{img.Config}, img.Layers...) {
			status, _, body := get(t, cl, http.MethodGet, "/v2/library/x/blobs/"+digest.FromBytes(b).String()+"?ns=index.docker.io", nil)
			if status != http.StatusOK || !bytes.Equal(body, b) {
				t.Fatalf("%q: blob %d", cl.User, status)
			}
		}
		if ts.Requests() == tokens {
			t.Errorf("%q pulled without asking the realm for a token", cl.User)
		}
	}
}

// anonymous: only requests without credentials use the account (here
// through the token realm), its decisions are the account's, and a
// request whose own credentials the registry refuses is never served with
// the account's.
func TestRegistriesAnonymousToken(t *testing.T) {
	private := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	hub, ts := startHub(t)
	img := regtest.RandomImage(2311, 1, 3000)
	img.Repo = "bot/app"
	pushAs(t, hub, "alice", "alice-pw", img)
	pw := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(pw, []byte("bot-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cache := regtest.StartCache(t, private.URL, map[string]any{
		"registries": map[string]any{"docker.io": map[string]any{
			"upstreams": []any{hub.URL},
			"anonymous": map[string]any{"username": "cache-bot", "passwordfile": pw},
		}},
	})
	layer := "/v2/bot/app/blobs/" + digest.FromBytes(img.Layers[0]).String()
	// Without ns, the default registry: the account is docker.io's only.
	if st, _, _ := rawGet(t, cache.URL, http.MethodGet, layer, ""); st != http.StatusUnauthorized {
		t.Fatalf("default registry without credentials: %d, want 401", st)
	}
	// Without credentials at docker.io: the account's pull. Twice (the
	// second from its decision and storage).
	for i := range 2 {
		tokens := ts.Requests()
		st, _, body := rawGet(t, cache.URL, http.MethodGet, layer+"?ns=docker.io", "")
		if st != http.StatusOK || !bytes.Equal(body, img.Layers[0]) {
			t.Fatalf("anonymous pull %d: %d", i, st)
		}
		if i == 0 && ts.Requests() == tokens {
			t.Errorf("the account got no token from the realm")
		}
		fillsDone(t, cache)
	}
	// bob's own credentials, which the hub refuses for bot/app: the hub's
	// answer, never the account's bytes.
	for _, authz := range []string{basic("bob", "bob-pw"), basic("bob", "wrong"), "Bearer " + ts.Mint("bob", nil, 0)} {
		st, hdr, body := rawGet(t, cache.URL, http.MethodGet, layer+"?ns=docker.io", authz)
		if st != http.StatusUnauthorized || bytes.Contains(body, img.Layers[0][:64]) {
			t.Errorf("%.12s: %d, want the hub's 401 and no byte", authz, st)
		}
		if !strings.HasPrefix(hdr.Get("WWW-Authenticate"), `Bearer realm="`+ts.URL+`",service="registry.docker.io"`) {
			t.Errorf("%.12s: challenge %q, want the hub's", authz, hdr.Get("WWW-Authenticate"))
		}
	}
	// A repository the account may not pull: the hub's own 401 and
	// challenge, unchanged.
	other := regtest.RandomImage(2312, 1, 1000)
	other.Repo = "private/app"
	pushAs(t, hub, "alice", "alice-pw", other)
	st, hdr, _ := rawGet(t, cache.URL, http.MethodGet, "/v2/private/app/blobs/"+digest.FromBytes(other.Layers[0]).String()+"?ns=docker.io", "")
	if want := `Bearer realm="` + ts.URL + `",service="registry.docker.io",scope="repository:private/app:pull"`; st != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != want {
		t.Errorf("account refused: %d %q, want 401 %q", st, hdr.Get("WWW-Authenticate"), want)
	}
}

// anonymous with a Basic registry: the account is sent as Basic, and a
// wrong client password gets the registry's own challenge.
func TestRegistriesAnonymousBasic(t *testing.T) {
	a := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	authB := regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw", "cache-bot": "bot-pw"})
	authB["htpasswd"]["realm"] = "origin-b"
	b := regtest.StartOrigin(t, authB)
	img := regtest.RandomImage(2313, 1, 2000)
	img.Repo = "team/app"
	pushAs(t, b, "alice", "alice-pw", img)
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("bot-pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	cache := regtest.StartCache(t, a.URL, map[string]any{"registries": map[string]any{regB: map[string]any{
		"upstreams": []any{b.URL},
		"anonymous": map[string]any{"username": "cache-bot", "passwordfile": pw},
	}}})
	layer := "/v2/team/app/blobs/" + digest.FromBytes(img.Layers[0]).String() + "?ns=" + regB
	if st, _, body := rawGet(t, cache.URL, http.MethodGet, layer, ""); st != http.StatusOK || !bytes.Equal(body, img.Layers[0]) {
		t.Fatalf("anonymous: %d", st)
	}
	st, hdr, body := rawGet(t, cache.URL, http.MethodGet, layer, basic("alice", "wrong"))
	if st != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") != `Basic realm="origin-b"` || bytes.Contains(body, img.Layers[0][:64]) {
		t.Errorf("wrong password: %d %q, want B's 401 and no byte", st, hdr.Get("WWW-Authenticate"))
	}
}
