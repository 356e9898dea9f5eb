package downstream_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/content-cache/content-cache/internal/regtest"
	"github.com/distribution/distribution/v3/configuration"
)

// exchange is one request the cache sent the origin, and the answer.
type exchange struct {
	method, path, ifNoneMatch string
	status                    int
}

func (e exchange) String() string {
	return e.method + " " + e.path + " If-None-Match=" + e.ifNoneMatch + " -> " + http.StatusText(e.status)
}

// exchanges records what passes between a cache and its origin.
type exchanges struct {
	mu  sync.Mutex
	all []exchange
}

// since returns the exchanges after the first n.
func (x *exchanges) since(n int) []exchange {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]exchange(nil), x.all[n:]...)
}

func (x *exchanges) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.all)
}

// recordOrigin puts a recording reverse proxy in front of origin and
// returns its URL, for a cache's upstream.
func recordOrigin(t *testing.T, origin *regtest.Server) (string, *exchanges) {
	t.Helper()
	u, err := url.Parse(origin.URL)
	if err != nil {
		t.Fatal(err)
	}
	x := &exchanges{}
	p := httputil.NewSingleHostReverseProxy(u)
	p.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		x.mu.Lock()
		x.all = append(x.all, exchange{r.Method, r.URL.Path, r.Header.Get("If-None-Match"), resp.StatusCode})
		x.mu.Unlock()
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return srv.URL, x
}

// tagCache is an htpasswd origin holding one image, public/app, and a
// cache in front of it whose requests to the origin are recorded.
type tagCache struct {
	auth   configuration.Auth
	origin *regtest.Server
	img    regtest.Image
	x      *exchanges
	cache  *regtest.Server
}

func startTagCache(t *testing.T, seed int64, options map[string]any) tagCache {
	t.Helper()
	tc := tagCache{auth: regtest.HtpasswdAuth(t, users)}
	tc.origin = regtest.StartOrigin(t, tc.auth)
	tc.img = regtest.RandomImage(seed, 1, 1000)
	tc.img.Repo = "public/app"
	push(t, tc.origin, tc.img)
	var up string
	up, tc.x = recordOrigin(t, tc.origin)
	tc.cache = regtest.StartCache(t, up, options)
	return tc
}

// A tag is resolved at the origin on every request. Once the cache holds
// the tag's manifest, it asks with If-None-Match naming the digest it
// holds: the origin answers 304 after authorizing the credential, without
// reading the manifest, and the cache serves the bytes it holds. One
// origin request per request; a moved tag, a revoked credential and the
// client's own If-None-Match are answered as by the origin, at once.
func TestTagResolvedWithIfNoneMatch(t *testing.T) {
	// A decision for an hour: tags must be asked at the origin anyway.
	tc := startTagCache(t, 50, map[string]any{"authttl": "1h"})
	auth, origin, first, x, cache := tc.auth, tc.origin, tc.img, tc.x, tc.cache
	bob := &regtest.Client{Base: cache.URL, User: "bob", Pass: "bob-pw"}
	tagPath := "/v2/public/app/manifests/" + first.Tag
	quoted := func(img regtest.Image) string { return `"` + img.Digest.String() + `"` }

	// want checks the origin requests since mark: exactly the tag's HEAD,
	// with inm, answered status.
	want := func(name string, mark int, inm string, status int) {
		t.Helper()
		got := x.since(mark)
		if len(got) != 1 || got[0] != (exchange{http.MethodHead, tagPath, inm, status}) {
			t.Fatalf("%s: the cache asked the origin %v, want one HEAD %s If-None-Match=%s -> %s", name, got, tagPath, inm, http.StatusText(status))
		}
	}

	pullImage(t, bob, first) // stores the manifest
	// The layers' fills commit after the client's last byte; until then a
	// pull may ask the origin about a blob it is still storing.
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mark := x.len()
		pullImage(t, bob, first)
		want(fmt.Sprint("unchanged tag, pull ", i+1), mark, quoted(first), http.StatusNotModified)
	}

	// The tag moves: the very next pull gets the new manifest.
	second := regtest.RandomImage(51, 1, 1000)
	second.Repo, second.Tag = first.Repo, first.Tag
	push(t, origin, second)
	pullImage(t, bob, second)
	// The layers' fills commit after the client's last byte; until then a
	// pull may ask the origin about a blob it is still storing.
	if err := cache.WaitFillsDone(t.Context()); err != nil {
		t.Fatal(err)
	}
	mark := x.len()
	pullImage(t, bob, second)
	want("moved tag, pulled again", mark, quoted(second), http.StatusNotModified)

	// The client's own If-None-Match, as at the origin: the current
	// digest gets 304, the old one the manifest.
	for _, inm := range []string{quoted(second), second.Digest.String(), quoted(first), "*"} {
		hdr := ociAccept()
		hdr.Set("Authorization", basic("bob", "bob-pw"))
		hdr.Set("If-None-Match", inm)
		mark := x.len()
		o, _ := sameAnswer(t, "client If-None-Match "+inm, origin, cache, http.MethodGet, tagPath, hdr, manifestHeaders...)
		want("client If-None-Match "+inm, mark, quoted(second), http.StatusNotModified)
		if wantStatus := map[bool]int{true: http.StatusNotModified, false: http.StatusOK}[strings.Contains(inm, second.Digest.String())]; o.status != wantStatus {
			t.Fatalf("client If-None-Match %s: origin answered %d, want %d; the case tests nothing", inm, o.status, wantStatus)
		}
	}

	// A credential the origin revokes gets the origin's 401 on the very
	// next request, within its decision's authttl, and never the manifest.
	others := map[string]string{}
	for u, p := range users {
		if u != "bob" {
			others[u] = p
		}
	}
	regtest.SetHtpasswd(t, auth, others)
	mark = x.len()
	a := send(t.Context(), cache.URL, http.MethodGet, tagPath, basic("bob", "bob-pw"), ociAccept())
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.status != http.StatusUnauthorized || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Basic ") || bytes.Contains(a.body, second.Manifest) {
		t.Fatalf("revoked credential: %d, WWW-Authenticate %q, body %.200q; want the origin's 401", a.status, a.header.Get("WWW-Authenticate"), a.body)
	}
	// The HEAD's refusal has no body: the cache asks once more, with a
	// GET, for the origin's error body.
	got := x.since(mark)
	if len(got) == 0 || got[0] != (exchange{http.MethodHead, tagPath, quoted(second), http.StatusUnauthorized}) {
		t.Fatalf("revoked credential: the cache asked the origin %v, want first a HEAD with If-None-Match refused", got)
	}
	for _, e := range got {
		if e.status != http.StatusUnauthorized {
			t.Fatalf("revoked credential: the cache asked the origin %v, want only refusals", got)
		}
	}
}

// A tag naming a Docker manifest list, asked by a client that does not
// accept lists, gets from the origin the manifest of the default platform
// instead (distribution's rewrite for old clients). Holding the list does
// not let the cache answer such a client from it: the origin decides.
func TestTagOfManifestListRewritten(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	img := regtest.RandomImage(52, 1, 1000)
	img.Repo = "public/app"
	push(t, origin, img)
	list := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"size":%d,"digest":%q,"platform":{"architecture":"amd64","os":"linux"}}]}`,
		manifestListType, img.MediaType, len(img.Manifest), img.Digest)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, origin.URL+"/v2/public/app/manifests/dlist", strings.NewReader(list))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", manifestListType)
	req.Header.Set("Authorization", basic("alice", "alice-pw"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("pushing the manifest list: %d", resp.StatusCode)
	}
	cache := regtest.StartCache(t, origin.URL, nil)
	accept := func(types ...string) http.Header {
		return http.Header{"Authorization": {basic("bob", "bob-pw")}, "Accept": types}
	}
	path := "/v2/public/app/manifests/dlist"
	for _, c := range []struct {
		name string
		hdr  http.Header
		want string // digest served
	}{
		{"list accepted", accept(manifestListType, img.MediaType), "sha256:"},
		{"list accepted, again", accept(manifestListType, img.MediaType), "sha256:"},
		{"list not accepted", accept(img.MediaType), img.Digest.String()},
		{"list accepted, after", accept(manifestListType, img.MediaType), "sha256:"},
		{"list not accepted, after", accept(img.MediaType), img.Digest.String()},
	} {
		o, _ := sameAnswer(t, c.name, origin, cache, http.MethodGet, path, c.hdr, manifestHeaders...)
		if d := o.header.Get("Docker-Content-Digest"); o.status != http.StatusOK || !strings.HasPrefix(d, c.want) || (c.want == "sha256:") == (d == img.Digest.String()) {
			t.Fatalf("%s: origin answered %d with %s; the case tests nothing", c.name, o.status, d)
		}
	}
}

const manifestListType = "application/vnd.docker.distribution.manifest.list.v2+json"

// A cold pull's tag costs one request at the origin: the GET of the tag,
// not a HEAD to resolve it first and then a GET of the digest (a round
// trip across the WAN before the manifest's own). A credential the origin
// refuses gets the origin's answer from that one GET, body included; once
// the cache holds the tag's manifest it resolves the tag with a HEAD as
// before.
func TestColdTagIsOneGet(t *testing.T) {
	tc := startTagCache(t, 52, nil)
	origin, img, x, cache := tc.origin, tc.img, tc.x, tc.cache
	tagPath := "/v2/public/app/manifests/" + img.Tag

	// Refused: the origin's 401 with its body, from one GET.
	hdr := ociAccept()
	hdr.Set("Authorization", basic("bob", "wrong"))
	mark := x.len()
	o, c := sameAnswer(t, "refused cold tag", origin, cache, http.MethodGet, tagPath, hdr, manifestHeaders...)
	if o.status != http.StatusUnauthorized || c.status != http.StatusUnauthorized {
		t.Fatalf("refused cold tag: origin %d, cache %d; want 401 from both", o.status, c.status)
	}
	if got := x.since(mark); len(got) != 1 || got[0] != (exchange{http.MethodGet, tagPath, "", http.StatusUnauthorized}) {
		t.Fatalf("refused cold tag: the cache asked the origin %v, want one GET %s refused", got, tagPath)
	}

	// Allowed: one GET of the tag, and the manifest verified.
	hdr.Set("Authorization", basic("bob", "bob-pw"))
	mark = x.len()
	a := send(t.Context(), cache.URL, http.MethodGet, tagPath, basic("bob", "bob-pw"), ociAccept())
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.status != http.StatusOK || !bytes.Equal(a.body, img.Manifest) || a.header.Get("Docker-Content-Digest") != img.Digest.String() {
		t.Fatalf("cold tag: %d, digest %q; want 200 with the manifest %s", a.status, a.header.Get("Docker-Content-Digest"), img.Digest)
	}
	if got := x.since(mark); len(got) != 1 || got[0] != (exchange{http.MethodGet, tagPath, "", http.StatusOK}) {
		t.Fatalf("cold tag: the cache asked the origin %v, want one GET %s", got, tagPath)
	}

	// Known now: a HEAD naming the digest held, answered 304.
	mark = x.len()
	a = send(t.Context(), cache.URL, http.MethodGet, tagPath, basic("bob", "bob-pw"), ociAccept())
	if a.err != nil || a.status != http.StatusOK || !bytes.Equal(a.body, img.Manifest) {
		t.Fatalf("known tag: %d %v; want 200 with the manifest", a.status, a.err)
	}
	quoted := `"` + img.Digest.String() + `"`
	if got := x.since(mark); len(got) != 1 || got[0] != (exchange{http.MethodHead, tagPath, quoted, http.StatusNotModified}) {
		t.Fatalf("known tag: the cache asked the origin %v, want one HEAD %s If-None-Match=%s answered 304", got, tagPath, quoted)
	}
}

// A client's If-None-Match on a tag the cache has no answer for gets the
// origin's answer: 304 for the current digest, the manifest otherwise.
func TestColdTagClientIfNoneMatch(t *testing.T) {
	for _, inm := range []string{"current", "other"} {
		t.Run(inm, func(t *testing.T) {
			tc := startTagCache(t, 53, nil)
			hdr := ociAccept()
			hdr.Set("Authorization", basic("bob", "bob-pw"))
			want := http.StatusNotModified
			if inm == "current" {
				hdr.Set("If-None-Match", `"`+tc.img.Digest.String()+`"`)
			} else {
				hdr.Set("If-None-Match", `"sha256:0000000000000000000000000000000000000000000000000000000000000000"`)
				want = http.StatusOK
			}
			o, c := sameAnswer(t, "cold tag, If-None-Match "+inm, tc.origin, tc.cache, http.MethodGet, "/v2/public/app/manifests/"+tc.img.Tag, hdr, "Docker-Distribution-API-Version")
			if o.status != want || c.status != want {
				t.Fatalf("If-None-Match %s: origin %d, cache %d; want %d", inm, o.status, c.status, want)
			}
		})
	}
}
