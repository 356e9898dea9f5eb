package registry_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestExpiryInBinary: the binary built from configs/cache.yml with a
// blobttl of 1s sweeps by itself, removes what was not pulled, logs it,
// and fetches it again on the next pull.
func TestExpiryInBinary(t *testing.T) {
	f := &fixture{pki: newPKI(t), htpasswd: writeHtpasswd(t)}
	origin := f.startConfig(t, filepath.Join(configsDir, "origin.yml"))
	f.origin = origin.base
	img := regtest.RandomImage(7, 1, 64<<10)
	if err := regtest.Push(t.Context(), origin.base, testUser, testPass, img); err != nil {
		t.Fatal(err)
	}

	path, base := f.rewrite(t, filepath.Join(configsDir, "cache.yml"))
	var root string
	editConfig(t, path, func(doc map[any]any) {
		storage, _ := mapAt(doc, "storage")
		fs, _ := mapAt(storage, "filesystem")
		root, _ = fs["rootdirectory"].(string)
	})
	editCacheOptions(t, path, func(opts map[any]any) { opts["blobttl"] = "1s" })
	p := start(t, "cache.yml", childEnv(), "serve", path)
	client := &http.Client{Timeout: 30 * time.Second}
	waitReady(t, p, client, base)

	d := digest.FromBytes(img.Layers[0])
	blobPath := "/v2/" + img.Repo + "/blobs/" + d.String()
	get := func() {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+blobPath, nil)
		req.SetBasicAuth(testUser, testPass)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
			t.Fatalf("GET %s: %d, %v", blobPath, resp.StatusCode, err)
		}
	}
	get()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	waitStored(ctx, t, root, img.Repo, d, len(img.Layers[0]))
	data0 := filepath.Join(root, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data")

	// Sweeps run every second; the blob goes once 1.1s passed unpulled.
	line, err := p.stderr.WaitFor(ctx, "expiry: removed", d.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("logged: %s", line)
	if _, err := os.Stat(data0); !os.IsNotExist(err) {
		t.Fatalf("blob data still on disk after the logged removal: %v", err)
	}
	get()
}
