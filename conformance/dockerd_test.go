package conformance

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// dockerKinds are the origins TestDockerdPull puts a cache in front of,
// each serving its image in another format. bobLogins tells whether
// `docker login` as bob succeeds: the token server knows bob (and grants
// him nothing), the htpasswd file does not.
var dockerKinds = []struct {
	name      string
	image     func(seed int64, layers int) regtest.Image
	seed      int64
	bobLogins bool
}{
	{"token", regtest.TarImage, 400, true},
	{"htpasswd", regtest.DockerTarImage, 410, false},
}

// dockerFixture is an origin holding private/app:v1, an image with three
// real tar layers, and a fresh cache in front of it.
type dockerFixture struct {
	origin, cache *regtest.Server
	served        *okCounter // GETs the origin answered with content
	img           regtest.Image
}

func newDockerFixture(t *testing.T, kind string, img regtest.Image) *dockerFixture {
	t.Helper()
	f := &dockerFixture{img: img}
	for _, k := range originKinds {
		if k.name == kind {
			f.origin = k.start(t)
		}
	}
	if f.origin == nil {
		t.Fatalf("no origin kind %q", kind)
	}
	var via string
	f.served, via = startOKCounter(t, f.origin.URL)
	f.cache = regtest.StartCache(t, via, nil)
	f.img.Repo, f.img.Tag = "private/app", "v1"
	if err := regtest.Push(t.Context(), f.origin.URL, "alice", "alice-pw", f.img); err != nil {
		t.Fatalf("push %s:%s: %v", f.img.Repo, f.img.Tag, err)
	}
	return f
}

// ref is the image's name at the cache.
func (f *dockerFixture) ref() string { return f.cache.Host + "/" + f.img.Repo + ":" + f.img.Tag }

// blobPaths are the registry paths of the image's config and layers.
func (f *dockerFixture) blobPaths() []string {
	var paths []string
	for _, b := range append([][]byte{f.img.Config}, f.img.Layers...) {
		paths = append(paths, "/v2/"+f.img.Repo+"/blobs/"+digest.FromBytes(b).String())
	}
	return paths
}

// newDocker is the docker CLI talking to engine e, with its own empty
// DOCKER_CONFIG (so logins never touch the host's).
func newDocker(t *testing.T, e *dockerEngine) *tool {
	t.Helper()
	c := newTool(t, "docker")
	c.env = append(c.env, "DOCKER_HOST="+e.host) // the last value of a key wins
	return c
}

// dockerAuthError matches how docker reports a registry's refusal of the
// credentials it sent, or of none.
var dockerAuthError = regexp.MustCompile(`(?i)unauthorized|authentication required|access.*denied|no basic auth credentials`)

// TestDockerdPull has a real Docker engine (a private dockerd, shared by
// the subtests) pull through the cache from a token and an htpasswd origin
// with the user's own credentials from `docker login`: a refused user and
// an anonymous pull must fail with the origin's refusal and leave nothing
// in the cache, and alice's pull must give the origin's image (digest,
// image ID and file contents) with each blob fetched from the origin once
// across a cold pull, `docker rmi` and a warm pull served by the cache.
func TestDockerdPull(t *testing.T) {
	e := startDockerd(t)
	for _, kind := range dockerKinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			f := newDockerFixture(t, kind.name, kind.image(kind.seed, 3))

			// The refusals first, while the cache is cold.
			t.Run("anonymous", func(t *testing.T) {
				d := newDocker(t, e)
				dockerDenied(t, d, f)
			})
			t.Run("bob", func(t *testing.T) {
				d := newDocker(t, e)
				r := d.exec(t, "bob-pw", "login", f.cache.Host, "-u", "bob", "--password-stdin")
				switch {
				case kind.bobLogins && r.err != nil:
					t.Fatalf("docker login as bob: %v\n%s", r.err, r.output)
				case !kind.bobLogins && r.err == nil:
					t.Errorf("docker login as bob succeeded, want the origin's refusal\n%s", r.output)
				case !kind.bobLogins:
					if !dockerAuthError.MatchString(r.output) {
						t.Errorf("docker login as bob: want an authentication error, got:\n%s", r.output)
					} else {
						t.Logf("docker login refused: %s", strings.TrimSpace(r.output))
					}
					// Store bob's credentials anyway so the pull sends them.
					writeDockerAuth(t, d, f.cache.Host, "bob", "bob-pw")
				}
				dockerDenied(t, d, f)
			})
			if err := noneOf(f.cache.Root, f.img); err != nil {
				t.Errorf("cache storage after refused pulls: %v", err)
			}

			t.Run("alice", func(t *testing.T) {
				d := newDocker(t, e)
				d.runStdin(t, "alice-pw", "login", f.cache.Host, "-u", "alice", "--password-stdin")
				blobs := f.blobPaths()

				start := time.Now()
				d.run(t, "pull", f.ref())
				t.Logf("cold pull: %v", time.Since(start).Round(time.Millisecond))
				checkDockerImage(t, d, f)
				cold := make(map[string]int, len(blobs))
				cacheCold := make(map[string]int, len(blobs))
				for _, p := range blobs {
					cold[p], cacheCold[p] = f.served.get(p), f.cache.Counts.Get("GET", p)
					if cold[p] != 1 {
						t.Errorf("cold pull: the origin served %d GETs of %s, want 1", cold[p], p)
					}
				}

				d.run(t, "rmi", f.ref())
				if r := d.exec(t, "", "image", "inspect", f.ref()); r.err == nil {
					t.Fatalf("docker image inspect after docker rmi succeeded: the warm pull would not pull\n%s", r.output)
				}

				start = time.Now()
				d.run(t, "pull", f.ref())
				t.Logf("warm pull: %v", time.Since(start).Round(time.Millisecond))
				checkDockerImage(t, d, f)
				for _, p := range blobs {
					if n := f.served.get(p); n != cold[p] {
						t.Errorf("warm pull: the origin served %d more GETs of %s, want 0 (a cache hit)", n-cold[p], p)
					}
					if n := f.cache.Counts.Get("GET", p); n <= cacheCold[p] {
						t.Errorf("warm pull: dockerd sent the cache no GET of %s: the warm pull proves nothing", p)
					}
				}
			})
		})
	}
}

// dockerDenied checks `docker pull` through the cache fails with an
// authentication error, leaves no image in the engine, and that the origin
// served none of the image's blobs.
func dockerDenied(t *testing.T, d *tool, f *dockerFixture) {
	t.Helper()
	r := d.mustFail(t, "pull", f.ref())
	if !dockerAuthError.MatchString(r.output) {
		t.Errorf("docker pull: want an authentication error, got:\n%s", r.output)
	} else {
		t.Logf("docker pull refused: %s", strings.TrimSpace(r.output))
	}
	if r := d.exec(t, "", "image", "inspect", f.ref()); r.err == nil {
		t.Errorf("docker image inspect after a refused pull succeeded:\n%s", r.output)
	}
	for _, p := range f.blobPaths() {
		if n := f.served.get(p); n != 0 {
			t.Errorf("refused pull: the origin served %d GETs of %s, want 0", n, p)
		}
	}
}

// writeDockerAuth stores user's credentials for host in the CLI's
// config.json without asking the registry (as `docker login` would after
// a successful check).
func writeDockerAuth(t *testing.T, d *tool, host, user, pass string) {
	t.Helper()
	var dir string
	for _, kv := range d.env {
		if v, ok := strings.CutPrefix(kv, "DOCKER_CONFIG="); ok {
			dir = v
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkDockerImage checks the engine holds the cache's image under the
// origin's manifest digest and config digest (the image ID), and that a
// container of it has the layers' files byte for byte.
func checkDockerImage(t *testing.T, d *tool, f *dockerFixture) {
	t.Helper()
	out := d.run(t, "image", "inspect", "--format", `{{.Id}}{{range .RepoDigests}} {{.}}{{end}}`, f.ref())
	fields := strings.Fields(string(out))
	if want := digest.FromBytes(f.img.Config).String(); len(fields) == 0 || fields[0] != want {
		t.Errorf("docker image inspect: ID and repo digests %q, want the ID %s (the config's digest)", out, want)
	}
	if want := f.cache.Host + "/" + f.img.Repo + "@" + f.img.Digest.String(); !slices.Contains(fields, want) {
		t.Errorf("docker image inspect: ID and repo digests %q, want the repo digest %s", out, want)
	}

	cid := strings.TrimSpace(string(d.run(t, "create", "--network", "none", f.ref())))
	defer d.run(t, "rm", cid)
	for i, layer := range f.img.Layers {
		name := fmt.Sprintf("cc/layer-%d/file-2", i)
		want, err := regtest.LayerFile(layer, name)
		if err != nil {
			t.Fatal(err)
		}
		archive := d.run(t, "cp", cid+":/"+name, "-")
		got, err := firstTarFile(archive)
		if err != nil {
			t.Errorf("docker cp %s from a container: %v", name, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("docker cp %s from a container: %d bytes (digest %s), want the layer's %d bytes (digest %s)",
				name, len(got), digest.FromBytes(got), len(want), digest.FromBytes(want))
		}
	}
}

// firstTarFile returns the content of the first regular file in a tar.
func firstTarFile(archive []byte) ([]byte, error) {
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			return io.ReadAll(tr)
		}
	}
}

// noneOf checks no file under dir is named after, or holds, the manifest,
// config or a layer of img.
func noneOf(dir string, img regtest.Image) error {
	digests := []digest.Digest{img.Digest}
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		digests = append(digests, digest.FromBytes(b))
	}
	return filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, d := range digests {
			if strings.Contains(path, d.Encoded()) {
				return fmt.Errorf("%s holds %s", path, d)
			}
		}
		if !e.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if d := digest.FromBytes(b); slices.Contains(digests, d) {
			return fmt.Errorf("%s holds %s", path, d)
		}
		return nil
	})
}
