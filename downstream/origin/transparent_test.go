package origin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"
)

// transparentSetup is an origin with an image, a content cache registered
// at it as region-asia, and alice assigned to that cache.
type transparentSetup struct {
	og       *testOrigin
	cache    *regtest.Server
	logs     *regtest.Buffer
	clock    *regtest.Clock
	img      regtest.Image
	blobPath string
}

// setupTransparent starts it; admin is the API credential ("" for Basic
// admin, else an Authorization header such as "Bearer ...").
func setupTransparent(t *testing.T, auth configuration.Auth, admin string) *transparentSetup {
	t.Helper()
	clock := &regtest.Clock{}
	og := startOrigin(t, auth, "", nil, clock)
	cache, logs := signingCache(t, og.URL, og.URL+keysPath, "region-asia", nil, clock)
	img := regtest.RandomImage(3, 2, 64<<10)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	register(t, og, admin, "region-asia", cache.URL)
	assign(t, og, admin, "alice", "region-asia")
	og.Origin.Probe(t.Context())
	return &transparentSetup{og: og, cache: cache, logs: logs, clock: clock, img: img,
		blobPath: "/v2/" + img.Repo + "/blobs/" + digestOf(img.Layers[0])}
}

func register(t *testing.T, og *testOrigin, admin, name, host string) {
	t.Helper()
	user, pass := adminCred(admin)
	if r := api(t, og.URL, user, pass, http.MethodPost, cachesPath, `{"name": "`+name+`", "host": "`+host+`"}`); r.Status != http.StatusCreated {
		t.Fatalf("create cache %s: %d %q", name, r.Status, r.Body)
	}
}

func assign(t *testing.T, og *testOrigin, admin, user, cache string) {
	t.Helper()
	au, ap := adminCred(admin)
	if r := api(t, og.URL, au, ap, http.MethodPatch, accountsPrefix+user+"/settings", `{"contentCache": "`+cache+`"}`); r.Status != http.StatusOK {
		t.Fatalf("assign %s to %s: %d %q", user, cache, r.Status, r.Body)
	}
}

func adminCred(admin string) (string, string) {
	if admin == "" {
		return "admin", "adminpw"
	}
	return admin, ""
}

// following authenticates as user at base and follows redirects, as
// clients do (dropping Authorization on the way to another host).
func following(base, user, pass string) *regtest.Client {
	return &regtest.Client{Base: base, User: user, Pass: pass, HTTP: &http.Client{}}
}

// signedURL asks the origin, as user, for path and returns the 307's
// Location, which points at a cache.
func signedURL(t *testing.T, og *testOrigin, user, pass, path string) *url.URL {
	t.Helper()
	r := do(t, pullClient(og.URL, user, pass), http.MethodGet, path)
	if r.Status != http.StatusTemporaryRedirect {
		t.Fatalf("GET %s at the origin as %s: %d, want 307", path, user, r.Status)
	}
	u, err := url.Parse(r.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestTransparentPull is the whole flow, on an origin with htpasswd auth
// and one with token auth: alice's blob GET at the origin is redirected to
// her cache, which fetches the miss with the signature; a warm pull takes
// no blob byte from the origin.
func TestTransparentPull(t *testing.T) {
	for name, auth := range map[string]func(t *testing.T) (configuration.Auth, string){
		"htpasswd": func(t *testing.T) (configuration.Auth, string) { return regtest.HtpasswdAuth(t, testUsers), "" },
		"token": func(t *testing.T) (configuration.Auth, string) {
			ts := regtest.NewTokenServer(t, testUsers, func(user, repo string) []string { return []string{"pull", "push"} })
			return ts.AuthConfig(), "Bearer " + ts.Mint("admin", nil, time.Hour)
		},
	} {
		t.Run(name, func(t *testing.T) {
			a, admin := auth(t)
			s := setupTransparent(t, a, admin)
			alice := following(s.og.URL, "alice", "alicepw")
			before := s.og.Counts.snapshot()
			for i, layer := range s.img.Layers {
				p := "/v2/" + s.img.Repo + "/blobs/" + digestOf(layer)
				if r := do(t, alice, http.MethodGet, p); r.Status != http.StatusOK || r.Body != string(layer) {
					t.Fatalf("cold pull of layer %d: %d, %d bytes", i, r.Status, len(r.Body))
				}
			}
			cold := s.og.Counts.snapshot()
			if got := cold.signedGETs - before.signedGETs; got != len(s.img.Layers) {
				t.Errorf("cold pull: the origin served %d signed blob GETs, want %d (one fill per layer)", got, len(s.img.Layers))
			}
			if cold.blobGETs-before.blobGETs != cold.signedGETs-before.signedGETs {
				t.Errorf("cold pull: the origin served %d blob GETs, %d of them signed; want only the cache's signed fills", cold.blobGETs-before.blobGETs, cold.signedGETs-before.signedGETs)
			}
			if cold.signedWithCred != 0 {
				t.Errorf("the cache forwarded a client credential with a signature %d times", cold.signedWithCred)
			}
			// The fills commit after their clients' last byte.
			if err := s.cache.WaitFillsDone(t.Context()); err != nil {
				t.Fatal(err)
			}

			for i, layer := range s.img.Layers {
				p := "/v2/" + s.img.Repo + "/blobs/" + digestOf(layer)
				if r := do(t, alice, http.MethodGet, p); r.Status != http.StatusOK || r.Body != string(layer) {
					t.Fatalf("warm pull of layer %d: %d, %d bytes", i, r.Status, len(r.Body))
				}
			}
			warm := s.og.Counts.snapshot()
			if warm.blobGETs != cold.blobGETs || warm.blobBytes != cold.blobBytes {
				t.Errorf("warm pull: the origin served %d blob GETs (%d bytes), want 0", warm.blobGETs-cold.blobGETs, warm.blobBytes-cold.blobBytes)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if _, err := s.logs.WaitFor(ctx, "result=hit", digestOf(s.img.Layers[0])); err != nil {
				t.Errorf("the cache's log shows no hit: %v\n%s", err, s.logs.String())
			}
			// The manifest is the origin's, for alice too.
			if r := do(t, alice, http.MethodGet, "/v2/"+s.img.Repo+"/manifests/"+s.img.Tag); r.Status != http.StatusOK || !bytes.Equal([]byte(r.Body), s.img.Manifest) {
				t.Fatalf("manifest: %d", r.Status)
			}
			// bob has no cache: served directly.
			b0 := s.og.Counts.snapshot()
			if r := do(t, following(s.og.URL, "bob", "bobpw"), http.MethodGet, s.blobPath); r.Status != http.StatusOK || r.Body != string(s.img.Layers[0]) {
				t.Fatalf("bob: %d", r.Status)
			}
			if got := s.og.Counts.snapshot(); got.blobGETs-b0.blobGETs != 1 || got.signedGETs != b0.signedGETs {
				t.Errorf("bob's pull: %d blob GETs at the origin (%d signed), want 1 unsigned; %+v %+v", got.blobGETs-b0.blobGETs, got.signedGETs-b0.signedGETs, b0, got)
			}
			if strings.Contains(s.logs.String(), "cc-sig") {
				t.Errorf("the cache's log holds a signature parameter")
			}
		})
	}
}

// TestTransparentHead: a signed HEAD (which a GET signature allows) is
// answered by the cache, hit or miss.
func TestTransparentHead(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	u := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	for _, when := range []string{"miss", "hit"} {
		resp := send(t, http.MethodHead, u.String())
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != itoa(int64(len(s.img.Layers[0]))) {
			t.Fatalf("HEAD (%s): %d, Content-Length %q", when, resp.StatusCode, resp.Header.Get("Content-Length"))
		}
		if when == "miss" {
			if r := send(t, http.MethodGet, u.String()); r.StatusCode != http.StatusOK {
				t.Fatalf("GET: %d", r.StatusCode)
			}
		}
	}
}

// send makes an unauthenticated request and reads the body whole.
func send(t *testing.T, method, u string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noRedirects().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

func body(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// originSigner is the key startOrigin's origins sign with (writeKey, 7).
func originSigner(t *testing.T) signature.Signer {
	t.Helper()
	return signerOf(t, seeded(7))
}

func signerOf(t *testing.T, k ed25519.PrivateKey) signature.Signer {
	t.Helper()
	id, err := signature.Thumbprint(k.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return signature.Signer{KeyID: id, PrivateKey: k}
}
