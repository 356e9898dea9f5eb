package downstream_test

import (
	"bytes"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// redirectBackends are the object stores whose drivers presign URLs.
var redirectBackends = []struct {
	name string
	new  func(testing.TB) regtest.Storage
}{
	{"s3", regtest.StartS3},
	{"azure", regtest.StartAzure},
}

// noFollow is a client that shows redirects instead of following them, and
// trusts the object store's certificates.
func noFollow(t *testing.T, st regtest.Storage) *http.Client {
	c := st.Server.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func doGET(t *testing.T, c *http.Client, url, authorization string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp, body
}

// TestStorageRedirect: with storage.redirect on, a hit answers 307 to a
// presigned URL of the object store, only after the origin authorized the
// request, and the URL gives the blob; with it off, the cache serves the
// bytes itself.
func TestStorageRedirect(t *testing.T) {
	for _, b := range redirectBackends {
		t.Run(b.name, func(t *testing.T) {
			st := b.new(t)
			st.Redirect = true
			origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
			img := regtest.RandomImage(141, 1, driverLayer)
			push(t, origin, img)
			extra := map[string]any{}
			logs := storageLogs(extra, downstream.Options{})
			cache := regtest.StartCacheOn(t, st, origin.URL, extra)
			path, dgst := layerAt(img, 0)
			url := cache.URL + path
			alice := basic("alice", "alice-pw")
			c := noFollow(t, st)

			// The miss streams from the upstream: nothing to redirect to yet.
			resp, body := doGET(t, c, url, alice)
			if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != dgst {
				t.Fatalf("miss: status %d, %d bytes; want 200 with the layer", resp.StatusCode, len(body))
			}
			fillsDone(t, cache)
			noStoreWarning(t, logs)

			// No credentials, or wrong ones: the origin's answer, no redirect.
			for _, authz := range []string{"", basic("alice", "wrong")} {
				resp, _ := doGET(t, c, url, authz)
				if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Location") != "" {
					t.Fatalf("hit with authorization %q: status %d, Location %q; want 401 and no redirect", authz, resp.StatusCode, resp.Header.Get("Location"))
				}
			}

			gets := origin.Counts.Get(http.MethodGet, path)
			before := st.Server.Requests.Snapshot()
			resp, _ = doGET(t, c, url, alice)
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, st.Server.URL+"/") {
				t.Fatalf("hit: status %d, Location %q; want 307 to %s", resp.StatusCode, loc, st.Server.URL)
			}
			// distribution, on the same bucket, answers the same redirect.
			plain := regtest.StartRegistryOn(t, st)
			want, _ := doGET(t, c, plain.URL+path, "")
			wantLoc, _ := neturl.Parse(want.Header.Get("Location"))
			gotLoc, _ := neturl.Parse(loc)
			if want.StatusCode != resp.StatusCode || wantLoc == nil || gotLoc == nil || wantLoc.Host != gotLoc.Host || wantLoc.Path != gotLoc.Path ||
				want.Header.Get("Content-Type") != resp.Header.Get("Content-Type") || want.Header.Get("Content-Length") != resp.Header.Get("Content-Length") {
				t.Fatalf("the cache's redirect differs from distribution's:\n got %d %q %v\nwant %d %q %v", resp.StatusCode, loc, resp.Header, want.StatusCode, want.Header.Get("Location"), want.Header)
			}
			// The presigned URL needs no credentials of the client's.
			resp, body = doGET(t, c, loc, "")
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Layers[0]) {
				t.Fatalf("following the redirect: status %d, %d bytes; want 200 with the layer: %.300s", resp.StatusCode, len(body), body)
			}
			t.Logf("hit with redirect, at the object store: %s", regtest.Format(st.Server.Requests.Since(before)))
			// A standard client follows it by itself.
			follow := st.Server.Client()
			t.Cleanup(follow.CloseIdleConnections)
			resp, body = doGET(t, follow, url, alice)
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Layers[0]) {
				t.Fatalf("plain client: status %d, %d bytes; want 200 with the layer", resp.StatusCode, len(body))
			}
			if n := origin.Counts.Get(http.MethodGet, path); n != gets {
				t.Fatalf("origin saw %d more GETs of the layer during the hits, want none", n-gets)
			}

			t.Run("crane", func(t *testing.T) { craneThroughRedirect(t, st) })

			t.Run("disabled", func(t *testing.T) {
				st.Redirect = false
				direct := regtest.StartCacheOn(t, st, origin.URL, nil)
				resp, body := doGET(t, c, direct.URL+path, alice)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, img.Layers[0]) {
					t.Fatalf("redirect disabled: status %d, Location %q, %d bytes; want 200 with the layer from the cache", resp.StatusCode, resp.Header.Get("Location"), len(body))
				}
			})
		})
	}
}

// craneThroughRedirect pulls an image with crane from an anonymous origin
// through a cache that redirects hits to st.
func craneThroughRedirect(t *testing.T, st regtest.Storage) {
	crane := regtest.Tool(t, "crane", "bin/crane")
	img := regtest.RandomImage(142, 1, driverLayer)
	img.Repo = "crane/app"
	origin := regtest.StartOrigin(t, nil)
	pushImage(t, origin, img)
	cache := regtest.StartCacheOn(t, st, origin.URL, nil)
	ref := cache.Host + "/" + img.Repo
	layer := digest.FromBytes(img.Layers[0])
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), crane, args...)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
		if st.Server.CA != nil {
			// Go's system roots: crane follows the redirect to the store.
			cmd.Env = append(cmd.Env, "SSL_CERT_FILE="+st.Server.CA.File)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return out
	}
	// Cold: stored by the fill; warm: redirected.
	for _, pass := range []string{"cold", "warm"} {
		before := st.Server.Requests.Snapshot()
		if out := run("blob", ref+"@"+layer.String()); !bytes.Equal(out, img.Layers[0]) {
			t.Fatalf("%s crane blob: %d bytes, want the layer", pass, len(out))
		}
		if pass == "warm" && st.Server.Requests.Since(before)["GetObject"]+st.Server.Requests.Since(before)["GetBlob"] == 0 {
			t.Fatalf("warm crane blob: the object store served nothing (%s); want crane to follow the redirect", regtest.Format(st.Server.Requests.Since(before)))
		}
		if pass == "cold" {
			fillsDone(t, cache)
		}
	}
	dir := filepath.Join(t.TempDir(), "oci")
	run("pull", "--format", "oci", ref+":"+img.Tag, dir)
	fillsDone(t, cache)
	run("pull", "--format", "oci", ref+":"+img.Tag, filepath.Join(t.TempDir(), "oci2"))
	if n := origin.Counts.Get(http.MethodGet, "/v2/"+img.Repo+"/blobs/"+layer.String()); n != 1 {
		t.Fatalf("origin saw %d GETs of the layer, want 1", n)
	}
}
