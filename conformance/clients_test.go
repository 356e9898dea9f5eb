package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestMain quiets the registries' logs; CONTENT_CACHE_TEST_LOG=1 shows them.
func TestMain(m *testing.M) {
	regtest.QuietLogs()
	os.Exit(m.Run())
}

// cmdTimeout bounds every client invocation.
const cmdTimeout = 60 * time.Second

// alice may do anything. bob is known to the token server but has no ACL
// entry, and is not in the htpasswd file at all: either way the origin
// refuses him everything.
var tokenUsers = map[string]string{"alice": "alice-pw", "bob": "bob-pw"}

func acl(user, _ string) []string {
	if user == "alice" {
		return []string{"*"}
	}
	return nil
}

var originKinds = []struct {
	name  string
	start func(t *testing.T) *regtest.Server
}{
	{"token", func(t *testing.T) *regtest.Server {
		ts := regtest.NewTokenServer(t, tokenUsers, acl)
		return regtest.StartOrigin(t, ts.AuthConfig())
	}},
	{"htpasswd", func(t *testing.T) *regtest.Server {
		return regtest.StartOrigin(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}))
	}},
}

// fixture is an origin holding public/app:v1 (one image, three layers) and
// public/multi:v1 (an index of two images), with a fresh cache in front.
type fixture struct {
	origin, cache *regtest.Server
	served        *okCounter // GETs the origin answered with content
	app           regtest.Image
	children      []regtest.Image // of public/multi:v1
	index         digest.Digest   // public/multi:v1
}

func newFixture(t *testing.T, startOrigin func(*testing.T) *regtest.Server) *fixture {
	t.Helper()
	f := &fixture{origin: startOrigin(t)}
	var via string
	f.served, via = startOKCounter(t, f.origin.URL)
	f.cache = regtest.StartCache(t, via, nil)

	f.app = regtest.RandomImage(1, 3, 64<<10)
	f.app.Repo, f.app.Tag = "public/app", "v1"
	f.push(t, f.app)
	for i, tag := range []string{"one", "two"} {
		img := regtest.RandomImage(int64(10+i), 2, 16<<10)
		img.Repo, img.Tag = "public/multi", tag
		f.push(t, img)
		f.children = append(f.children, img)
	}
	d, err := regtest.PushIndex(t.Context(), f.origin.URL, "alice", "alice-pw", "public/multi", "v1", f.children)
	if err != nil {
		t.Fatalf("push index public/multi:v1: %v", err)
	}
	f.index = d
	return f
}

func (f *fixture) push(t *testing.T, img regtest.Image) {
	t.Helper()
	if err := regtest.Push(t.Context(), f.origin.URL, "alice", "alice-pw", img); err != nil {
		t.Fatalf("push %s:%s: %v", img.Repo, img.Tag, err)
	}
}

// ref names repoTag (or repo@digest) at the cache.
func (f *fixture) ref(repoRef string) string { return f.cache.Host + "/" + repoRef }

func (f *fixture) images() []regtest.Image { return append([]regtest.Image{f.app}, f.children...) }

// blobPaths are the origin paths of every config and layer blob.
func (f *fixture) blobPaths() []string {
	var paths []string
	for _, img := range f.images() {
		for _, b := range append([][]byte{img.Config}, img.Layers...) {
			paths = append(paths, "/v2/"+img.Repo+"/blobs/"+digest.FromBytes(b).String())
		}
	}
	return paths
}

// manifestPaths are the origin paths of every manifest by digest.
func (f *fixture) manifestPaths() []string {
	paths := []string{"/v2/public/multi/manifests/" + f.index.String()}
	for _, img := range f.images() {
		paths = append(paths, "/v2/"+img.Repo+"/manifests/"+img.Digest.String())
	}
	return paths
}

// allDigests are the digests of everything the fixture pushed.
func (f *fixture) allDigests() []digest.Digest {
	ds := []digest.Digest{f.index}
	for d := range imageBlobs(f.images()...) {
		ds = append(ds, d)
	}
	return ds
}

// originGETs counts the GETs of each path the origin answered with content.
// Refusals do not count: a client's first, anonymous request is passed to
// the origin for its challenge, and that 401 is no fill.
func (f *fixture) originGETs(paths []string) map[string]int {
	m := make(map[string]int, len(paths))
	for _, p := range paths {
		m[p] = f.served.get(p)
	}
	return m
}

// imageBlobs maps digest to content for the manifests, configs and layers
// of imgs.
func imageBlobs(imgs ...regtest.Image) map[digest.Digest][]byte {
	m := map[digest.Digest][]byte{}
	for _, img := range imgs {
		m[img.Digest] = img.Manifest
		for _, b := range append([][]byte{img.Config}, img.Layers...) {
			m[digest.FromBytes(b)] = b
		}
	}
	return m
}

// tool is a client binary with its own, empty configuration and
// credential store under a temp dir.
type tool struct {
	name, path string
	env        []string
}

func newTool(t *testing.T, name string) *tool {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found on PATH (CI is set, so not skipping): %v", name, err)
		}
		t.Skipf("%s not found on PATH; run `make tools` and put .tools/bin on PATH (`make test` does both): %v", name, err)
	}
	home := t.TempDir()
	isolated := []string{"HOME", "DOCKER_CONFIG", "XDG_CONFIG_HOME", "REGCTL_CONFIG"}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(isolated, k) {
			env = append(env, kv)
		}
	}
	env = append(env,
		"HOME="+home,
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
	)
	return &tool{name: name, path: path, env: env}
}

type result struct {
	stdout []byte
	output string // stdout and stderr interleaved
	err    error
}

// exec runs the tool with args (and stdin, if not empty) under cmdTimeout.
func (c *tool) exec(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.path, args...)
	cmd.Env = c.env
	cmd.Dir = t.TempDir()
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout bytes.Buffer
	var combined regtest.Buffer
	cmd.Stdout = io.MultiWriter(&stdout, &combined)
	cmd.Stderr = &combined
	err := cmd.Run()
	if ctx.Err() != nil && t.Context().Err() == nil {
		err = fmt.Errorf("timed out after %v: %w", cmdTimeout, err)
	}
	return result{stdout: stdout.Bytes(), output: combined.String(), err: err}
}

// run runs the tool and fails the test unless it succeeds; it returns
// stdout.
func (c *tool) run(t *testing.T, args ...string) []byte {
	t.Helper()
	return c.runStdin(t, "", args...)
}

func (c *tool) runStdin(t *testing.T, stdin string, args ...string) []byte {
	t.Helper()
	r := c.exec(t, stdin, args...)
	if r.err != nil {
		t.Fatalf("%s %s: %v\n%s", c.name, strings.Join(args, " "), r.err, r.output)
	}
	return r.stdout
}

// mustFail runs the tool and fails the test unless it exits non-zero.
func (c *tool) mustFail(t *testing.T, args ...string) result {
	t.Helper()
	r := c.exec(t, "", args...)
	var exitErr *exec.ExitError
	switch {
	case r.err == nil:
		t.Errorf("%s %s succeeded, want a non-zero exit\n%s", c.name, strings.Join(args, " "), r.output)
	case !errors.As(r.err, &exitErr) || strings.HasPrefix(r.err.Error(), "timed out"):
		t.Errorf("%s %s: %v, want a non-zero exit\n%s", c.name, strings.Join(args, " "), r.err, r.output)
	}
	return r
}

// client drives one registry client binary.
type client struct {
	name string
	// login stores user's credentials for host in the tool's config.
	login func(t *testing.T, c *tool, host, user, pass string)
	// pull runs one full round of the client's pull commands against the
	// cache, checking everything against what was pushed.
	pull func(t *testing.T, c *tool, f *fixture)
	// denied runs the pull commands as a user the origin refuses, checking
	// each fails and leaves nothing behind.
	denied func(t *testing.T, c *tool, f *fixture)
}

var clients = []client{
	{
		name: "crane",
		login: func(t *testing.T, c *tool, host, user, pass string) {
			c.run(t, "auth", "login", host, "-u", user, "-p", pass)
		},
		pull: func(t *testing.T, c *tool, f *fixture) {
			app, multi := f.ref("public/app:v1"), f.ref("public/multi:v1")
			wantDigest(t, "crane digest "+app, c.run(t, "digest", app), f.app.Digest)
			wantDigest(t, "crane digest "+multi, c.run(t, "digest", multi), f.index)
			wantBytes(t, "crane manifest "+app, c.run(t, "manifest", app), f.app.Manifest)
			wantBytesDigest(t, "crane manifest "+multi, c.run(t, "manifest", multi), f.index)

			dir := filepath.Join(t.TempDir(), "app")
			c.run(t, "pull", "--format", "oci", app, dir)
			checkLayout(t, dir, f.app.Digest, imageBlobs(f.app))
			dir = filepath.Join(t.TempDir(), "multi")
			c.run(t, "pull", "--format", "oci", multi, dir)
			checkLayout(t, dir, f.index, imageBlobs(f.children...))

			layer := f.app.Layers[1]
			ref := f.ref("public/app@" + digest.FromBytes(layer).String())
			wantBytes(t, "crane blob "+ref, c.run(t, "blob", ref), layer)
		},
		denied: func(t *testing.T, c *tool, f *fixture) {
			app := f.ref("public/app:v1")
			for _, args := range [][]string{{"digest", app}, {"manifest", app}} {
				r := c.mustFail(t, args...)
				wantNoPrivateOutput(t, "crane "+strings.Join(args, " "), r.stdout, f)
			}
			dir := filepath.Join(t.TempDir(), "app")
			c.mustFail(t, "pull", "--format", "oci", app, dir)
			if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("refused crane pull created %s (stat: %v)", dir, err)
			}
			ref := f.ref("public/app@" + digest.FromBytes(f.app.Layers[1]).String())
			r := c.mustFail(t, "blob", ref)
			wantNoPrivateOutput(t, "crane blob "+ref, r.stdout, f)
		},
	},
	{
		name: "regctl",
		login: func(t *testing.T, c *tool, host, user, pass string) {
			// --skip-check: without credentials yet, regctl's ping fails
			// against an htpasswd origin (as it would at the origin itself).
			c.run(t, "registry", "set", "--tls", "disabled", "--skip-check", host)
			c.runStdin(t, pass, "registry", "login", host, "-u", user, "--pass-stdin")
		},
		pull: func(t *testing.T, c *tool, f *fixture) {
			app, multi := f.ref("public/app:v1"), f.ref("public/multi:v1")
			wantDigest(t, "regctl image digest "+app, c.run(t, "image", "digest", app), f.app.Digest)
			wantDigest(t, "regctl image digest "+multi, c.run(t, "image", "digest", multi), f.index)
			wantBytes(t, "regctl manifest get "+app, c.run(t, "manifest", "get", "--format", "raw-body", app), f.app.Manifest)
			wantBytesDigest(t, "regctl manifest get "+multi, c.run(t, "manifest", "get", "--format", "raw-body", multi), f.index)

			dir := filepath.Join(t.TempDir(), "app")
			c.run(t, "image", "copy", app, "ocidir://"+dir+":v1")
			checkLayout(t, dir, f.app.Digest, imageBlobs(f.app))
			dir = filepath.Join(t.TempDir(), "multi")
			c.run(t, "image", "copy", multi, "ocidir://"+dir+":v1")
			checkLayout(t, dir, f.index, imageBlobs(f.children...))

			layer := f.app.Layers[1]
			wantBytes(t, "regctl blob get", c.run(t, "blob", "get", f.ref("public/app"), digest.FromBytes(layer).String()), layer)
		},
		denied: func(t *testing.T, c *tool, f *fixture) {
			app := f.ref("public/app:v1")
			for _, args := range [][]string{
				{"image", "digest", app},
				{"manifest", "get", "--format", "raw-body", app},
				{"blob", "get", f.ref("public/app"), digest.FromBytes(f.app.Layers[1]).String()},
			} {
				r := c.mustFail(t, args...)
				wantNoPrivateOutput(t, "regctl "+strings.Join(args, " "), r.stdout, f)
			}
			dir := filepath.Join(t.TempDir(), "app")
			c.mustFail(t, "image", "copy", app, "ocidir://"+dir+":v1")
			wantNoBlobs(t, "refused regctl image copy", dir, f)
		},
	},
}

// TestClientsPullThroughCache has crane and regctl pull an image and an
// index through the cache as a user the origin admits, first cold and then
// warm, for each kind of origin authentication.
func TestClientsPullThroughCache(t *testing.T) {
	for _, kind := range originKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			for _, cl := range clients {
				t.Run(cl.name, func(t *testing.T) {
					t.Parallel()
					c := newTool(t, cl.name)
					f := newFixture(t, kind.start) // per client, so both start cold
					cl.login(t, c, f.cache.Host, "alice", "alice-pw")

					cl.pull(t, c, f)
					blobs, manifests := f.blobPaths(), f.manifestPaths()
					cold := f.originGETs(blobs)
					for _, p := range blobs {
						if cold[p] != 1 {
							t.Errorf("cold pull: origin saw %d GETs of %s, want 1 (one fill, however many client requests)", cold[p], p)
						}
					}
					coldManifests := f.originGETs(manifests)

					cl.pull(t, c, f)
					for p, n := range f.originGETs(blobs) {
						if n != cold[p] {
							t.Errorf("warm pull: origin saw %d more GETs of %s, want 0 (a cache hit)", n-cold[p], p)
						}
					}
					for p, n := range f.originGETs(manifests) {
						if n != coldManifests[p] {
							t.Errorf("warm pull: origin saw %d more GETs of %s, want 0 (stored on the cold pull)", n-coldManifests[p], p)
						}
					}
				})
			}
		})
	}
}

// TestClientsDenied has each client pull through the cache as bob, whom the
// origin refuses: every command must exit non-zero, and no content may
// reach the client or the cache's storage.
func TestClientsDenied(t *testing.T) {
	for _, kind := range originKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, kind.start)
			for _, cl := range clients {
				t.Run(cl.name, func(t *testing.T) {
					c := newTool(t, cl.name)
					if cl.name == "regctl" {
						// regctl's login checks the credentials, which fails
						// outright for htpasswd; the pulls are the point.
						c.run(t, "registry", "set", "--tls", "disabled", "--skip-check", f.cache.Host)
						c.runStdin(t, "bob-pw", "registry", "login", f.cache.Host, "-u", "bob", "--pass-stdin", "--skip-check")
					} else {
						cl.login(t, c, f.cache.Host, "bob", "bob-pw")
					}
					cl.denied(t, c, f)
				})
			}
			// The origin does see GETs of the blob: the cache fills with
			// the client's own credentials and the origin's 401 is the
			// refusal. So check what was kept rather than what was asked.
			wantNoBlobs(t, "cache storage after refused pulls", f.cache.Root, f)
		})
	}
}

func wantDigest(t *testing.T, what string, out []byte, want digest.Digest) {
	t.Helper()
	if got := strings.TrimSpace(string(out)); got != want.String() {
		t.Errorf("%s printed %q, want the origin's digest %s", what, got, want)
	}
}

// wantBytes compares out with want, allowing one trailing newline added by
// the client.
func wantBytes(t *testing.T, what string, out, want []byte) {
	t.Helper()
	if !bytes.Equal(out, want) && !bytes.Equal(bytes.TrimSuffix(out, []byte("\n")), want) {
		t.Errorf("%s: %d bytes (digest %s), want the origin's %d bytes (digest %s)",
			what, len(out), digest.FromBytes(out), len(want), digest.FromBytes(want))
	}
}

func wantBytesDigest(t *testing.T, what string, out []byte, want digest.Digest) {
	t.Helper()
	if digest.FromBytes(out) != want && digest.FromBytes(bytes.TrimSuffix(out, []byte("\n"))) != want {
		t.Errorf("%s: %d bytes with digest %s, want the origin's %s", what, len(out), digest.FromBytes(out), want)
	}
}

// wantNoPrivateOutput checks a refused command printed none of the
// fixture's manifests or layers.
func wantNoPrivateOutput(t *testing.T, what string, out []byte, f *fixture) {
	t.Helper()
	for d, b := range imageBlobs(f.images()...) {
		// 256 bytes: past the common JSON prefix of manifests.
		if len(out) > 0 && bytes.Contains(out, b[:min(len(b), 256)]) {
			t.Errorf("refused %s printed content of %s", what, d)
		}
	}
}

// wantNoBlobs checks no file under dir is named after, or holds, any of
// the fixture's content.
func wantNoBlobs(t *testing.T, what, dir string, f *fixture) {
	t.Helper()
	digests := f.allDigests()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == dir {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		for _, dg := range digests {
			if strings.Contains(path, dg.Encoded()) {
				t.Errorf("%s: %s holds %s", what, path, dg)
				return nil
			}
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if dg := digest.FromBytes(b); slices.Contains(digests, dg) {
			t.Errorf("%s: %s holds %s", what, path, dg)
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: walking %s: %v", what, dir, err)
	}
}

// checkLayout checks the OCI layout at dir lists want in its index.json,
// holds every blob of blobs byte for byte, and that every blob it holds
// matches its name.
func checkLayout(t *testing.T, dir string, want digest.Digest, blobs map[digest.Digest][]byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Errorf("layout %s: %v", dir, err)
		return
	}
	var idx v1.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Errorf("layout %s: index.json: %v", dir, err)
		return
	}
	if !slices.ContainsFunc(idx.Manifests, func(d v1.Descriptor) bool { return d.Digest == want }) {
		t.Errorf("layout %s: index.json does not list the origin's digest %s: %s", dir, want, raw)
	}
	blobPath := func(d digest.Digest) string {
		return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
	}
	if _, err := os.Stat(blobPath(want)); err != nil {
		t.Errorf("layout %s: %v", dir, err)
	}
	for d, b := range blobs {
		got, err := os.ReadFile(blobPath(d))
		if err != nil {
			t.Errorf("layout %s: %v", dir, err)
		} else if !bytes.Equal(got, b) {
			t.Errorf("layout %s: blob %s differs from the origin's", dir, d)
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Errorf("layout %s: %v", dir, err)
		return
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", "sha256", e.Name()))
		if err != nil {
			t.Errorf("layout %s: %v", dir, err)
		} else if got := digest.FromBytes(b).Encoded(); got != e.Name() {
			t.Errorf("layout %s: blob %s has content digest sha256:%s", dir, e.Name(), got)
		}
	}
}
