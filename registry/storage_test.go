package registry_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestS3SampleConfig runs configs/cache-s3.yml, the README's S3 example,
// against a versitygw of the test's own: a blob pulled twice is fetched
// once, stored in the bucket and then served from it, and the logs hold
// no error and no warning of the cache.
func TestS3SampleConfig(t *testing.T) {
	f := &fixture{pki: newPKI(t), htpasswd: writeHtpasswd(t)}
	origin := f.startConfig(t, filepath.Join(configsDir, "origin.yml"))
	f.origin = origin.base
	img := regtest.RandomImage(61, 1, 6<<20)
	if err := regtest.Push(t.Context(), origin.base, testUser, testPass, img); err != nil {
		t.Fatal(err)
	}
	cache := f.startConfig(t, filepath.Join(configsDir, "cache-s3.yml"))
	d := digest.FromBytes(img.Layers[0])
	blobPath := "/v2/" + img.Repo + "/blobs/" + d.String()
	get := func() {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, cache.base+blobPath, nil)
		req.SetBasicAuth(testUser, testPass)
		resp, err := cache.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
			t.Fatalf("GET %s: %d, %v", blobPath, resp.StatusCode, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	get()
	if _, err := cache.proc.stderr.WaitFor(ctx, "result=miss", d.String()); err != nil {
		t.Fatal(err)
	}
	// In the bucket (versitygw's posix back end: a file per object) once
	// the fill committed.
	waitStored(ctx, t, f.s3.Server.Dir, img.Repo, d, len(img.Layers[0]))
	get()
	if _, err := cache.proc.stderr.WaitFor(ctx, "result=hit", d.String()); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{cache.proc.stdout.String(), cache.proc.stderr.String()} {
		for line := range strings.Lines(out) {
			// distribution's own startup warnings (no http.secret, no
			// repository remover) are not the cache's.
			if strings.Contains(line, "level=error") || strings.Contains(line, "level=warning") && strings.Contains(line, "component=downstream") {
				t.Errorf("cache on S3 logged: %s", line)
			}
		}
	}
}

// TestS3CranePullTwice is the reproduction: crane pulls a 50 MB
// single-layer image twice through configs/cache-s3.yml on versitygw
// (redirects off). The origin sends the layer once, and the second pull is
// served from the bucket.
func TestS3CranePullTwice(t *testing.T) {
	crane := regtest.Tool(t, "crane", "bin/crane")
	f := &fixture{pki: newPKI(t), htpasswd: writeHtpasswd(t)}
	origin := f.startConfig(t, filepath.Join(configsDir, "origin.yml"))
	f.origin = origin.base
	img := regtest.RandomImage(62, 1, 50_007_828)
	if err := regtest.Push(t.Context(), origin.base, testUser, testPass, img); err != nil {
		t.Fatal(err)
	}
	cache := f.startConfig(t, filepath.Join(configsDir, "cache-s3.yml"))
	env := append(childEnv(), "DOCKER_CONFIG="+t.TempDir())
	host := strings.TrimPrefix(cache.base, "http://")
	run := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), crane, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("auth", "login", host, "-u", testUser, "-p", testPass)
	layer := digest.FromBytes(img.Layers[0])
	// The origin's access log: one line per blob GET it answered.
	originGETs := func() int {
		return strings.Count(origin.proc.stdout.String()+origin.proc.stderr.String(), `"GET /v2/`+img.Repo+`/blobs/`+layer.String()+` HTTP/1.1" 200`)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	run("pull", "--format", "oci", host+"/"+img.Repo+":"+img.Tag, filepath.Join(t.TempDir(), "first"))
	// The fill commits after crane's last byte: wait for it in the bucket.
	waitStored(ctx, t, f.s3.Server.Dir, img.Repo, layer, len(img.Layers[0]))
	run("pull", "--format", "oci", host+"/"+img.Repo+":"+img.Tag, filepath.Join(t.TempDir(), "second"))
	if _, err := cache.proc.stderr.WaitFor(ctx, "result=hit", layer.String()); err != nil {
		t.Fatal(err)
	}
	if n := originGETs(); n != 1 {
		t.Fatalf("the origin sent the layer %d times, want 1", n)
	}
	if strings.Contains(cache.proc.stderr.String(), "cannot store blob locally") {
		t.Fatalf("the cache could not store a blob:\n%s", cache.proc.stderr.String())
	}
}

// waitStored waits until the storage under root (a filesystem root, or
// versitygw's posix directory: a file per object) holds dgst's data of
// size bytes and its link in repo: a fill commits, and links, after its
// client's last byte.
func waitStored(ctx context.Context, t *testing.T, root, repo string, dgst digest.Digest, size int) {
	t.Helper()
	data := filepath.Join(root, "docker/registry/v2/blobs", string(dgst.Algorithm()), dgst.Encoded()[:2], dgst.Encoded(), "data")
	link := filepath.Join(root, "docker/registry/v2/repositories", repo, "_layers", string(dgst.Algorithm()), dgst.Encoded(), "link")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		fi, err := os.Stat(data)
		_, lerr := os.Stat(link)
		if err == nil && fi.Size() == int64(size) && lerr == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s was not stored and linked in %s (%s)", dgst, repo, data)
		case <-tick.C:
		}
	}
}
