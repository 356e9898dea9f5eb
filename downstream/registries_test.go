package downstream_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// regB is the ns that names the second registry in these tests, and
// regBStored the first component of its repositories' names in storage
// (no ":" in a storage path).
const (
	regB       = "registry-b.test:5000"
	regBStored = "registry-b.test_5000"
)

// twoRegistries starts origin A (the default registry, realm "origin") and
// origin B (realm "origin-b", where alice has another password), and a
// cache of both: B selected by ns=registry-b.test.
func twoRegistries(t *testing.T, extra map[string]any) (a, b, cache *regtest.Server) {
	t.Helper()
	a = regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	authB := regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-at-b", "bob": "bob-pw"})
	authB["htpasswd"]["realm"] = "origin-b"
	b = regtest.StartOrigin(t, authB)
	opts := map[string]any{"registries": map[string]any{regB: map[string]any{"upstreams": []any{b.URL}}}}
	for k, v := range extra {
		opts[k] = v
	}
	cache = regtest.StartCache(t, a.URL, opts)
	return a, b, cache
}

func pushAs(t *testing.T, origin *regtest.Server, user, pass string, img regtest.Image) {
	t.Helper()
	if err := regtest.Push(t.Context(), origin.URL, user, pass, img); err != nil {
		t.Fatalf("push %s:%s: %v", img.Repo, img.Tag, err)
	}
}

func blobGets(s *regtest.Server) int {
	n := 0
	for k, v := range s.Counts.Snapshot() {
		if strings.HasPrefix(k, "GET ") && strings.Contains(k, "/blobs/") {
			n += v
		}
	}
	return n
}

// ns selects the registry: library/app at A and at B are two repositories,
// each served with its own registry's bytes, stored apart (A's under its
// own name, as a single-origin cache stores it; B's under its ns), and
// pulled again with no blob GET at either origin. Answers to requests with
// ns carry OCI-Namespace.
func TestRegistriesRouting(t *testing.T) {
	a, b, cache := twoRegistries(t, nil)
	imgA := regtest.RandomImage(2301, 2, 2000)
	imgA.Repo = "library/app"
	imgB := regtest.RandomImage(2302, 2, 3000)
	imgB.Repo = "library/app"
	pushAs(t, a, "alice", "alice-pw", imgA)
	pushAs(t, b, "alice", "alice-at-b", imgB)

	clientA := &regtest.Client{Base: cache.URL, User: "alice", Pass: "alice-pw"}
	clientB := &regtest.Client{Base: cache.URL, User: "alice", Pass: "alice-at-b"}
	pull := func(c *regtest.Client, img regtest.Image, q string) {
		t.Helper()
		status, hdr, body := get(t, c, http.MethodGet, "/v2/"+img.Repo+"/manifests/"+img.Tag+q, ociAccept())
		if status != http.StatusOK || !bytes.Equal(body, img.Manifest) {
			t.Fatalf("manifest%s: %d, own bytes %v", q, status, bytes.Equal(body, img.Manifest))
		}
		wantNS := ""
		if i := strings.Index(q, "ns="); i >= 0 {
			wantNS = q[i+3:]
		}
		if got := hdr.Get("OCI-Namespace"); got != wantNS {
			t.Errorf("manifest%s: OCI-Namespace %q, want %q", q, got, wantNS)
		}
		for _, blob := range append([][]byte{img.Config}, img.Layers...) {
			status, hdr, body := get(t, c, http.MethodGet, "/v2/"+img.Repo+"/blobs/"+digest.FromBytes(blob).String()+q, nil)
			if status != http.StatusOK || !bytes.Equal(body, blob) {
				t.Fatalf("blob%s: %d, own bytes %v", q, status, bytes.Equal(body, blob))
			}
			if got := hdr.Get("OCI-Namespace"); got != wantNS {
				t.Errorf("blob%s: OCI-Namespace %q, want %q", q, got, wantNS)
			}
		}
	}
	pull(clientA, imgA, "")
	pull(clientB, imgB, "?ns="+regB)
	pull(clientA, imgA, "?ns="+a.Host) // the default registry named
	// Without ns, B by a path prefix: its stored name (podman 4 and
	// CRI-O mirrors with a path, any client of the cache's address).
	imgBp := imgB
	imgBp.Repo = regBStored + "/" + imgB.Repo
	pull(clientB, imgBp, "")
	fillsDone(t, cache)
	beforeA, beforeB := blobGets(a), blobGets(b)
	pull(clientA, imgA, "")
	pull(clientB, imgB, "?ns="+regB)
	pull(clientB, imgB, "?ns="+strings.ToUpper(regB))
	pull(clientB, imgBp, "")
	if st, _, body := get(t, clientB, http.MethodGet, "/v2/"+imgBp.Repo+"/tags/list", nil); st != http.StatusOK || !strings.Contains(string(body), `"name":"library/app"`) {
		t.Errorf("tags through the path prefix: %d %s, want B's list of library/app", st, body)
	}
	if n := blobGets(a) - beforeA; n != 0 {
		t.Errorf("warm pulls: %d blob GETs at A, want 0", n)
	}
	if n := blobGets(b) - beforeB; n != 0 {
		t.Errorf("warm pulls: %d blob GETs at B, want 0", n)
	}
	// Storage: A's repository where a single-origin cache keeps it, B's
	// under its ns.
	repos := filepath.Join(cache.Root, "docker", "registry", "v2", "repositories")
	for _, p := range []string{filepath.Join(repos, "library", "app", "_layers"), filepath.Join(repos, regBStored, "library", "app", "_layers")} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("storage: %v", err)
		}
	}
	// Metrics by registry: the default one by its origin's host.
	all := scrape(t, cache.Cache.Gatherer())
	for _, reg := range []string{a.Host, regB} {
		k := `content_cache_requests_total{kind="blob",registry="` + reg + `",result="hit"}`
		if all[k] < 3 {
			t.Errorf("%s = %v, want at least 3", k, all[k])
		}
	}
}

// An ns the cache does not serve gets 404 NAME_UNKNOWN naming it and the
// registries served; a malformed one 400 NAME_INVALID; a name of the
// default registry (named by ns) that would meet another registry's stored
// repositories 404. None of them asks any upstream.
func TestRegistriesRefusals(t *testing.T) {
	a, b, cache := twoRegistries(t, nil)
	img := regtest.RandomImage(2303, 1, 1000)
	img.Repo = "library/app"
	pushAs(t, a, "alice", "alice-pw", img)
	auth := http.Header{"Authorization": {basic("alice", "alice-pw")}}
	layer := "/v2/library/app/blobs/" + digest.FromBytes(img.Layers[0]).String()
	for _, tc := range []struct {
		path, code, detail string
		status             int
	}{
		{layer + "?ns=ghcr.io", "NAME_UNKNOWN", "ghcr.io", http.StatusNotFound},
		{"/v2/?ns=quay.io", "NAME_UNKNOWN", "quay.io", http.StatusNotFound},
		{layer + "?ns=127.0.0.1:15000:80", "NAME_INVALID", "127.0.0.1:15000:80", http.StatusBadRequest},
		{layer + "?ns=https://" + regB, "NAME_INVALID", "https://" + regB, http.StatusBadRequest},
		{layer + "?ns=" + regB + "&ns=ghcr.io", "NAME_UNKNOWN", "ghcr.io", http.StatusNotFound},
		{"/v2/" + regBStored + "/library/app/blobs/" + digest.FromBytes(img.Layers[0]).String() + "?ns=" + a.Host, "NAME_UNKNOWN", "", http.StatusNotFound},
	} {
		before := total(a.Counts.Snapshot()) + total(b.Counts.Snapshot())
		an := ask(t, cache.URL, http.MethodGet, tc.path, auth)
		if n := total(a.Counts.Snapshot()) + total(b.Counts.Snapshot()) - before; n != 0 {
			t.Errorf("%s: %d upstream requests, want 0", tc.path, n)
		}
		var body struct {
			Errors []struct {
				Code, Message string
				Detail        map[string]string
			}
		}
		if err := json.Unmarshal(an.body, &body); err != nil || len(body.Errors) != 1 {
			t.Fatalf("%s: %d %q is not one OCI error", tc.path, an.status, an.body)
		}
		e := body.Errors[0]
		if an.status != tc.status || e.Code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.path, an.status, e.Code, tc.status, tc.code)
		}
		if tc.detail != "" && (e.Detail["ns"] != tc.detail || !strings.Contains(e.Message, `"`+tc.detail+`"`)) {
			t.Errorf("%s: error %+v does not name %q", tc.path, e, tc.detail)
		}
		if tc.code == "NAME_UNKNOWN" && tc.detail != "" && (!strings.Contains(e.Message, regB) || !strings.Contains(e.Message, a.Host)) {
			t.Errorf("%s: message %q does not list the registries served", tc.path, e.Message)
		}
		if tc.detail == "" && (!strings.Contains(e.Message, "ns="+regB) || e.Detail["registry"] != regB) {
			t.Errorf("%s: message %q does not say how to ask for it", tc.path, e.Message)
		}
	}
}

// Authorization per registry: a credential the default registry allowed
// (its decision cached) is asked again at B, and B's own challenge comes
// back unchanged; a blob stored for A is served through B only once B
// confirmed that B's repository has it for that credential.
func TestRegistriesIsolation(t *testing.T) {
	a, b, cache := twoRegistries(t, nil)
	img := regtest.RandomImage(2304, 1, 4000)
	img.Repo = "library/app"
	pushAs(t, a, "alice", "alice-pw", img)
	layer := digest.FromBytes(img.Layers[0]).String()
	aliceA := basic("alice", "alice-pw")
	// Stored and decided at A.
	if st, _, body := rawGet(t, cache.URL, http.MethodGet, "/v2/library/app/blobs/"+layer, aliceA); st != http.StatusOK || !bytes.Equal(body, img.Layers[0]) {
		t.Fatalf("A: %d", st)
	}
	fillsDone(t, cache)
	// At B, alice-pw is no credential: B's challenge, unchanged.
	st, hdr, body := rawGet(t, cache.URL, http.MethodGet, "/v2/library/app/blobs/"+layer+"?ns="+regB, aliceA)
	if st != http.StatusUnauthorized || bytes.Contains(body, img.Layers[0][:64]) {
		t.Fatalf("B with A's credential: %d, want 401 and no byte", st)
	}
	if got := hdr.Get("WWW-Authenticate"); got != `Basic realm="origin-b"` {
		t.Errorf("B's challenge: %q, want B's own", got)
	}
	// B's credential, but B has no such blob in library/app: B's 404, not
	// A's stored bytes.
	aliceB := basic("alice", "alice-at-b")
	if st, _, body := rawGet(t, cache.URL, http.MethodGet, "/v2/library/app/blobs/"+layer+"?ns="+regB, aliceB); st != http.StatusNotFound || bytes.Contains(body, img.Layers[0][:64]) {
		t.Fatalf("B without the blob: %d, want 404 and no byte", st)
	}
	// Once B has it, it is served from storage after B's confirmation
	// (a HEAD), with no GET of the blob at B: stored once.
	pushAs(t, b, "alice", "alice-at-b", img)
	heads := b.Counts.Get(http.MethodHead, "/v2/library/app/blobs/"+layer)
	gets := b.Counts.Get(http.MethodGet, "/v2/library/app/blobs/"+layer)
	if st, _, body := rawGet(t, cache.URL, http.MethodGet, "/v2/library/app/blobs/"+layer+"?ns="+regB, aliceB); st != http.StatusOK || !bytes.Equal(body, img.Layers[0]) {
		t.Fatalf("B with the blob: %d", st)
	}
	if n := b.Counts.Get(http.MethodGet, "/v2/library/app/blobs/"+layer) - gets; n != 0 {
		t.Errorf("B saw %d GETs of the stored blob, want 0", n)
	}
	if n := b.Counts.Get(http.MethodHead, "/v2/library/app/blobs/"+layer) - heads; n != 1 {
		t.Errorf("B saw %d HEADs of the blob, want 1 (its confirmation)", n)
	}
}
