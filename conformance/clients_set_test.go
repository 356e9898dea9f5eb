package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/content-cache/content-cache/internal/regtest"
)

// subject is one thing pushed to the origin for the clients to pull.
type subject struct {
	name, repo, tag string
	digest          digest.Digest // of the top manifest or index
	manifest        []byte        // its bytes
	blobs           map[digest.Digest][]byte
}

func (s subject) repoTag() string { return s.repo + ":" + s.tag }

// setFixture is a token-auth origin holding a multi-platform index, an
// image with ten layers and an OCI artifact, with a fresh cache in front.
// The cache reaches the origin through served, which counts the GETs the
// origin answered with content (2xx): a client's first, anonymous request
// is passed to the origin for its challenge, and that 401 is no fill.
type setFixture struct {
	origin, cache *regtest.Server
	served        *okCounter
	subjects      []subject
}

// okCounter is a reverse proxy counting the 2xx answers to GETs by path.
type okCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *okCounter) get(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[path]
}

func (c *okCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

func startOKCounter(t *testing.T, target string) (*okCounter, string) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := &okCounter{m: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && resp.StatusCode/100 == 2 {
			c.mu.Lock()
			c.m[resp.Request.URL.Path]++
			c.mu.Unlock()
		}
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func newSetFixture(t *testing.T) *setFixture {
	t.Helper()
	ts := regtest.NewTokenServer(t, tokenUsers, acl)
	f := &setFixture{origin: regtest.StartOrigin(t, ts.AuthConfig())}
	var via string
	f.served, via = startOKCounter(t, f.origin.URL)
	f.cache = regtest.StartCache(t, via, nil)
	ctx := t.Context()
	push := func(img regtest.Image) {
		t.Helper()
		if err := regtest.Push(ctx, f.origin.URL, "alice", "alice-pw", img); err != nil {
			t.Fatalf("push %s:%s: %v", img.Repo, img.Tag, err)
		}
	}

	var children []regtest.Image
	for i, arch := range []string{"amd64", "arm64"} {
		img := platformImage(int64(300+i), arch)
		img.Repo, img.Tag = "public/multi", arch
		push(img)
		children = append(children, img)
	}
	idx, err := regtest.PushIndex(ctx, f.origin.URL, "alice", "alice-pw", "public/multi", "v1", children)
	if err != nil {
		t.Fatalf("push index: %v", err)
	}
	idxBytes := f.originManifest(t, "public/multi", idx)
	f.subjects = append(f.subjects, subject{
		name: "index", repo: "public/multi", tag: "v1",
		digest: idx, manifest: idxBytes, blobs: imageBlobs(children...),
	})

	big := regtest.RandomImage(310, 10, 48<<10)
	big.Repo, big.Tag = "public/big", "v1"
	push(big)
	f.subjects = append(f.subjects, subject{
		name: "10-layer image", repo: big.Repo, tag: big.Tag,
		digest: big.Digest, manifest: big.Manifest, blobs: imageBlobs(big),
	})

	art := artifactImage(320)
	art.Repo, art.Tag = "public/artifact", "v1"
	push(art)
	f.subjects = append(f.subjects, subject{
		name: "artifact", repo: art.Repo, tag: art.Tag,
		digest: art.Digest, manifest: art.Manifest, blobs: imageBlobs(art),
	})
	return f
}

// originManifest fetches a manifest back from the origin by digest.
func (f *setFixture) originManifest(t *testing.T, repo string, d digest.Digest) []byte {
	t.Helper()
	c := &regtest.Client{Base: f.origin.URL, User: "alice", Pass: "alice-pw"}
	resp, err := c.Do(t.Context(), http.MethodGet, "/v2/"+repo+"/manifests/"+d.String(),
		map[string][]string{"Accept": {v1.MediaTypeImageIndex + ", " + v1.MediaTypeImageManifest}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || digest.FromBytes(raw) != d {
		t.Fatalf("GET %s@%s from the origin: %d, %v", repo, d, resp.StatusCode, err)
	}
	return raw
}

// paths returns the origin paths of every blob and of every manifest by
// digest of the fixture.
func (f *setFixture) paths() (blobs, manifests []string) {
	for _, s := range f.subjects {
		manifests = append(manifests, "/v2/"+s.repo+"/manifests/"+s.digest.String())
		for d, b := range s.blobs {
			p := "/v2/" + s.repo + "/blobs/" + d.String()
			if isManifest(b) {
				manifests = append(manifests, "/v2/"+s.repo+"/manifests/"+d.String())
			} else {
				blobs = append(blobs, p)
			}
		}
	}
	return blobs, manifests
}

func isManifest(b []byte) bool {
	var m struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
	}
	return json.Unmarshal(b, &m) == nil && m.SchemaVersion == 2 &&
		(m.MediaType == v1.MediaTypeImageManifest || m.MediaType == v1.MediaTypeImageIndex)
}

func (f *setFixture) originGETs(paths []string) map[string]int {
	m := make(map[string]int, len(paths))
	for _, p := range paths {
		m[p] = f.served.get(p)
	}
	return m
}

// platformImage is RandomImage(seed, 2, 16 KiB) with its config set to
// linux/arch.
func platformImage(seed int64, arch string) regtest.Image {
	img := regtest.RandomImage(seed, 2, 16<<10)
	var cfg v1.Image
	if err := json.Unmarshal(img.Config, &cfg); err != nil {
		panic(err)
	}
	cfg.Architecture = arch
	img.Config = mustMarshal(cfg)
	var m v1.Manifest
	if err := json.Unmarshal(img.Manifest, &m); err != nil {
		panic(err)
	}
	m.Config.Digest, m.Config.Size = digest.FromBytes(img.Config), int64(len(img.Config))
	img.Manifest = mustMarshal(m)
	img.Digest = digest.FromBytes(img.Manifest)
	return img
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// setClient pulls every subject of a setFixture through its cache.
type setClient struct {
	name string
	// localhost: address the cache as localhost:PORT rather than
	// 127.0.0.1:PORT (oras only trusts a loopback token realm on the
	// registry's own host name).
	localhost bool
	// login stores alice's credentials for host, if the client needs that.
	login func(t *testing.T, c *tool, host string)
	// needs lists other binaries the client needs.
	needs []string
	// round runs one full pull of every subject from host, checking what
	// the client got against the origin's content.
	round func(t *testing.T, c *tool, f *setFixture, host string)
}

// layoutRound builds a round from a command that writes ref into an OCI
// layout at dir (tagged "v1") and one that prints ref's raw manifest.
func layoutRound(layout func(t *testing.T, c *tool, ref, dir string), manifest func(t *testing.T, c *tool, ref string) []byte) func(*testing.T, *tool, *setFixture, string) {
	return func(t *testing.T, c *tool, f *setFixture, host string) {
		for _, s := range f.subjects {
			ref := host + "/" + s.repoTag()
			if manifest != nil {
				wantBytes(t, c.name+" manifest of the "+s.name, manifest(t, c, ref), s.manifest)
			}
			dir := filepath.Join(t.TempDir(), "layout")
			layout(t, c, ref, dir)
			checkLayout(t, dir, s.digest, s.blobs)
		}
	}
}

var setClients = []setClient{
	{
		name: "crane",
		login: func(t *testing.T, c *tool, host string) {
			c.run(t, "auth", "login", host, "-u", "alice", "-p", "alice-pw")
		},
		round: layoutRound(
			func(t *testing.T, c *tool, ref, dir string) {
				c.run(t, "pull", "--format", "oci", ref, dir)
			},
			func(t *testing.T, c *tool, ref string) []byte { return c.run(t, "manifest", ref) },
		),
	},
	{
		name: "regctl",
		login: func(t *testing.T, c *tool, host string) {
			c.run(t, "registry", "set", "--tls", "disabled", "--skip-check", host)
			c.runStdin(t, "alice-pw", "registry", "login", host, "-u", "alice", "--pass-stdin")
		},
		round: layoutRound(
			func(t *testing.T, c *tool, ref, dir string) {
				c.run(t, "image", "copy", ref, "ocidir://"+dir+":v1")
			},
			func(t *testing.T, c *tool, ref string) []byte {
				return c.run(t, "manifest", "get", "--format", "raw-body", ref)
			},
		),
	},
	{
		name:      "oras",
		localhost: true,
		round: layoutRound(
			func(t *testing.T, c *tool, ref, dir string) {
				c.run(t, "copy", "--from-plain-http", "--from-username", "alice", "--from-password", "alice-pw",
					ref, "--to-oci-layout", dir+":v1")
			},
			func(t *testing.T, c *tool, ref string) []byte {
				return c.run(t, "manifest", "fetch", "--plain-http", "-u", "alice", "-p", "alice-pw", ref)
			},
		),
	},
	{
		name: "skopeo",
		round: func(t *testing.T, c *tool, f *setFixture, host string) {
			policy := filepath.Join(t.TempDir(), "policy.json")
			if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
				t.Fatal(err)
			}
			layoutRound(
				func(t *testing.T, c *tool, ref, dir string) {
					c.run(t, "--policy", policy, "copy", "--all", "--preserve-digests",
						"--src-tls-verify=false", "--src-creds", "alice:alice-pw",
						"docker://"+ref, "oci:"+dir+":v1")
				},
				func(t *testing.T, c *tool, ref string) []byte {
					return c.run(t, "--policy", policy, "inspect", "--raw",
						"--tls-verify=false", "--creds", "alice:alice-pw", "docker://"+ref)
				},
			)(t, c, f, host)
		},
	},
	{
		name:  "ctr",
		needs: []string{"containerd"},
		round: func(t *testing.T, c *tool, f *setFixture, host string) {
			// A fresh containerd per round: its content store would
			// otherwise answer the warm round without asking the cache.
			sock := startContainerd(t)
			for _, s := range f.subjects {
				ref := host + "/" + s.repoTag()
				c.run(t, "--address", sock, "-n", "cc", "content", "fetch", "--plain-http",
					"--user", "alice:alice-pw", "--all-platforms", ref)
				want := map[digest.Digest][]byte{s.digest: s.manifest}
				for d, b := range s.blobs {
					want[d] = b
				}
				for d, b := range want {
					got := c.run(t, "--address", sock, "-n", "cc", "content", "get", d.String())
					wantBytes(t, fmt.Sprintf("ctr content get %s (%s)", d, s.name), got, b)
				}
			}
		},
	},
}

// TestClientsPullSet has crane, regctl, oras, skopeo and containerd's ctr
// each pull a multi-platform index, an image with ten layers and an OCI
// artifact through the cache from a token-auth origin, cold and then warm,
// checking every manifest and blob against the origin's, that the cold
// round fetched each blob from the origin once and that the warm round
// fetched nothing by digest from it.
func TestClientsPullSet(t *testing.T) {
	for _, cl := range setClients {
		t.Run(cl.name, func(t *testing.T) {
			t.Parallel()
			c := newTool(t, cl.name)
			for _, n := range cl.needs {
				newTool(t, n)
			}
			f := newSetFixture(t)
			blobs, manifests := f.paths()
			host := f.cache.Host
			if cl.localhost {
				host = "localhost:" + f.cache.Host[strings.LastIndex(f.cache.Host, ":")+1:]
			}
			if cl.login != nil {
				cl.login(t, c, host)
			}

			start := time.Now()
			cl.round(t, c, f, host)
			t.Logf("cold round: %v", time.Since(start).Round(time.Millisecond))
			cold, coldManifests := f.originGETs(blobs), f.originGETs(manifests)
			for _, p := range blobs {
				// Clients may take the empty config of the artifact from
				// its descriptor's data field instead of fetching it.
				embedded := strings.HasSuffix(p, v1.DescriptorEmptyJSON.Digest.String())
				if cold[p] != 1 && (!embedded || cold[p] != 0) {
					t.Errorf("cold round: the origin served %d GETs of %s, want 1", cold[p], p)
				}
			}

			originBefore, cacheBefore := f.served.snapshot(), f.cache.Counts.Snapshot()
			start = time.Now()
			cl.round(t, c, f, host)
			t.Logf("warm round: %v", time.Since(start).Round(time.Millisecond))
			defer func() {
				if t.Failed() {
					t.Logf("warm round, requests to the cache: %v", countsDiff(cacheBefore, f.cache.Counts.Snapshot()))
					t.Logf("warm round, GETs the origin served: %v", countsDiff(originBefore, f.served.snapshot()))
				}
			}()
			for p, n := range f.originGETs(blobs) {
				if n != cold[p] {
					t.Errorf("warm round: the origin served %d more GETs of %s, want 0", n-cold[p], p)
				}
			}
			for p, n := range f.originGETs(manifests) {
				if n != coldManifests[p] {
					t.Errorf("warm round: the origin served %d more GETs of %s, want 0", n-coldManifests[p], p)
				}
			}
		})
	}
}

// countsDiff lists the requests counted in after but not before.
func countsDiff(before, after map[string]int) []string {
	var out []string
	for k, n := range after {
		if d := n - before[k]; d > 0 {
			out = append(out, fmt.Sprintf("%s ×%d", k, d))
		}
	}
	slices.Sort(out)
	return out
}
