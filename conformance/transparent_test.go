package conformance

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/downstream/origin"
	"github.com/content-cache/content-cache/internal/regtest"
)

// blobCounter is a reverse proxy in front of the origin counting the blob
// GETs the origin answered 200, apart: those a cache sent with a signature
// (its fills) and everyone else's (bytes served directly to clients).
type blobCounter struct {
	mu     sync.Mutex
	direct map[string]int
	signed map[string]int
}

func startBlobCounter(t *testing.T, target string) (*blobCounter, *httptest.Server) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &blobCounter{direct: map[string]int{}, signed: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") && resp.StatusCode == http.StatusOK {
			c.mu.Lock()
			if req.URL.Query().Get("cc-sig") != "" { // the signature's parameter
				c.signed[req.URL.Path]++
			} else {
				c.direct[req.URL.Path]++
			}
			c.mu.Unlock()
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return c, srv
}

func (c *blobCounter) get(path string) (direct, signed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.direct[path], c.signed[path]
}

// transparentFixture is an origin with the contentcaches middleware (its
// address is a counting proxy's: clients and the cache use that), a cache
// registered there as region-asia with the origin's key endpoint, and
// alice assigned to it.
type transparentFixture struct {
	originHost string // what clients pull from
	counts     *blobCounter
	cache      *regtest.Server
	cacheLog   *regtest.Buffer
	img        regtest.Image
	origin     *origin.Origin
}

// transparentKinds are the origins: token and htpasswd auth, each with the
// admin credential its API takes.
var transparentKinds = []struct {
	name  string
	start func(t *testing.T) (configuration.Auth, string)
}{
	{"token", func(t *testing.T) (configuration.Auth, string) {
		ts := regtest.NewTokenServer(t, tokenUsers, acl)
		return ts.AuthConfig(), "Bearer " + ts.Mint("alice", nil, time.Hour)
	}},
	{"htpasswd", func(t *testing.T) (configuration.Auth, string) {
		return regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"}), ""
	}},
}

func newTransparentFixture(t *testing.T, kind string, img regtest.Image) *transparentFixture {
	t.Helper()
	var auth configuration.Auth
	var admin string
	for _, k := range transparentKinds {
		if k.name == kind {
			auth, admin = k.start(t)
		}
	}
	key := filepath.Join(t.TempDir(), "origin-ed25519.pem")
	priv, err := genKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := map[string]any{"signingkey": key, "admins": []any{"alice"}}
	origin.SetOptions(opts, origin.Options{ManualProbes: true})
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": t.TempDir()},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
		Auth:       auth,
		Middleware: map[string][]configuration.Middleware{"registry": {{Name: origin.Name, Options: opts}}},
	}
	cfg.HTTP.Secret = "transparent-secret"
	cfg.Log.AccessLog.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	osrv := httptest.NewServer(origin.Wrap(cfg, app))
	og, _ := origin.Instance(cfg)
	t.Cleanup(func() {
		osrv.Close()
		_ = app.Shutdown()
		cancel()
		_ = og.Close()
	})
	f := &transparentFixture{img: img, cacheLog: &regtest.Buffer{}}
	var via *httptest.Server
	f.counts, via = startBlobCounter(t, osrv.URL)
	f.originHost = strings.TrimPrefix(via.URL, "http://")

	l := logrus.New()
	l.SetOutput(f.cacheLog)
	extra := map[string]any{"signing": map[string]any{"name": "region-asia", "keysurl": via.URL + "/api/v0/content_caches/keys"}}
	downstream.SetOptions(extra, downstream.Options{Logger: logrus.NewEntry(l)})
	f.cache = regtest.StartCache(t, via.URL, extra)

	f.img.Repo, f.img.Tag = "private/app", "v1"
	if err := regtest.Push(t.Context(), via.URL, "alice", "alice-pw", f.img); err != nil {
		t.Fatalf("push: %v", err)
	}
	apiCall(t, via.URL, admin, http.MethodPost, "/api/v0/content_caches", `{"name": "region-asia", "host": "`+f.cache.URL+`"}`, http.StatusCreated)
	apiCall(t, via.URL, admin, http.MethodPatch, "/api/v0/accounts/alice/settings", `{"contentCache": "region-asia"}`, http.StatusOK)
	og.Probe(t.Context())
	f.origin = og
	return f
}

// apiCall sends an API request as the admin (Basic alice, or the given
// Authorization) and checks the status.
func apiCall(t *testing.T, base, admin, method, path, body string, want int) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if admin == "" {
		req.SetBasicAuth("alice", "alice-pw")
	} else {
		req.Header.Set("Authorization", admin)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d", method, path, resp.StatusCode, want)
	}
}

func (f *transparentFixture) ref() string { return f.originHost + "/" + f.img.Repo + ":" + f.img.Tag }

func (f *transparentFixture) blobPaths() []string {
	var paths []string
	for _, b := range append([][]byte{f.img.Config}, f.img.Layers...) {
		paths = append(paths, "/v2/"+f.img.Repo+"/blobs/"+digest.FromBytes(b).String())
	}
	return paths
}

// checkCounts checks that the origin served no blob byte to the client,
// and fetches by the cache numbered wantSigned per blob in all.
func (f *transparentFixture) checkCounts(t *testing.T, round string, wantSigned int) {
	t.Helper()
	for _, p := range f.blobPaths() {
		direct, signed := f.counts.get(p)
		if direct != 0 {
			t.Errorf("%s: the origin served %s directly %d times, want 0 (every blob byte from the cache)", round, p, direct)
		}
		if signed != wantSigned {
			t.Errorf("%s: the cache fetched %s from the origin %d times, want %d", round, p, signed, wantSigned)
		}
	}
}

// TestTransparentClients has crane, skopeo and containerd's ctr pull from
// the origin's address as alice, who is assigned to a cache: manifests
// come from the origin, every blob from the cache (fetched from the origin
// once, with the signature), and a warm pull takes nothing from the origin.
func TestTransparentClients(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pulls := []struct {
		name  string
		needs []string
		pull  func(t *testing.T, c *tool, f *transparentFixture)
	}{
		{"crane", nil, func(t *testing.T, c *tool, f *transparentFixture) {
			dir := filepath.Join(t.TempDir(), "app")
			c.run(t, "pull", "--format", "oci", f.ref(), dir)
			checkLayout(t, dir, f.img.Digest, imageBlobs(f.img))
		}},
		{"skopeo", nil, func(t *testing.T, c *tool, f *transparentFixture) {
			dir := filepath.Join(t.TempDir(), "app")
			c.run(t, "--policy", policy, "copy", "--preserve-digests", "--src-tls-verify=false", "--src-creds", "alice:alice-pw",
				"docker://"+f.ref(), "oci:"+dir+":v1")
			checkLayout(t, dir, f.img.Digest, imageBlobs(f.img))
		}},
		{"ctr", []string{"containerd"}, func(t *testing.T, c *tool, f *transparentFixture) {
			// A fresh containerd per pull: its content store would answer
			// the warm pull without asking anyone.
			sock := startContainerd(t)
			c.run(t, "--address", sock, "-n", "cc", "content", "fetch", "--plain-http", "--user", "alice:alice-pw", f.ref())
			for d, b := range imageBlobs(f.img) {
				wantBytes(t, "ctr content get "+d.String(), c.run(t, "--address", sock, "-n", "cc", "content", "get", d.String()), b)
			}
		}},
	}
	for _, p := range pulls {
		t.Run(p.name, func(t *testing.T) {
			c := newTool(t, p.name)
			for _, n := range p.needs {
				newTool(t, n)
			}
			for _, kind := range transparentKinds {
				t.Run(kind.name, func(t *testing.T) {
					f := newTransparentFixture(t, kind.name, regtest.RandomImage(500, 3, 64<<10))
					if p.name == "crane" {
						c.run(t, "auth", "login", f.originHost, "-u", "alice", "-p", "alice-pw")
					}
					p.pull(t, c, f)
					f.checkCounts(t, "cold pull", 1)
					p.pull(t, c, f)
					f.checkCounts(t, "warm pull", 1)
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
					defer cancel()
					if _, err := f.cacheLog.WaitFor(ctx, "result=hit"); err != nil {
						t.Errorf("the cache's log shows no hit: %v", err)
					}
				})
			}
		})
	}
}
