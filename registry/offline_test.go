package registry_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/content-cache/content-cache/internal/regtest"
)

// writeUsers writes an htpasswd file for user:password pairs (alternating).
func writeUsers(t *testing.T, path string, pairs ...string) {
	t.Helper()
	var b strings.Builder
	for i := 0; i < len(pairs); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(pairs[i+1]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(pairs[i] + ":" + string(h) + "\n")
	}
	// Written beside and renamed, so that the origin never reads half a file.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// editConfig rewrites a configuration file through edit.
func editConfig(t *testing.T, path string, edit func(doc map[any]any)) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[any]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc)
	if data, err = yaml.Marshal(doc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// editCacheOptions rewrites the downstream options of a configuration
// file.
func editCacheOptions(t *testing.T, path string, edit func(opts map[any]any)) {
	t.Helper()
	editConfig(t, path, func(doc map[any]any) {
		mw, _ := mapAt(doc, "middleware")
		entry, _ := mw["registry"].([]any)[0].(map[any]any)
		opts, _ := mapAt(entry, "options")
		edit(opts)
	})
}

// TestOfflineGraceOriginKilled: with offlinegrace, an origin killed by PID
// mid-run leaves the credentials it allowed pulling what they pulled
// (manifests by tag and digest, blobs, the ping), marked with a Warning,
// logged result=stale and counted; a credential never seen allowed, a
// credential the origin refused before the outage (revoked or wrong), a
// tag never resolved and a blob never stored get 503 as without it. Once
// the origin is back, its answers count at once.
func TestOfflineGraceOriginKilled(t *testing.T) {
	users := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, users, "alice", "alice-pw", "bob", "bob-pw", "carol", "carol-pw")
	f := &fixture{pki: newPKI(t), htpasswd: users}
	originPath, originBase := f.rewrite(t, filepath.Join(configsDir, "origin.yml"))
	client := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	origin := start(t, "origin.yml", childEnv(), "serve", originPath)
	waitReady(t, origin, client, originBase)
	f.origin = originBase

	img := regtest.RandomImage(25, 2, 32<<10)
	fresh := regtest.RandomImage(26, 1, 32<<10) // pushed, never pulled through the cache
	fresh.Repo = "regtest/fresh"
	for _, im := range []regtest.Image{img, fresh} {
		if err := regtest.Push(t.Context(), originBase, "alice", "alice-pw", im); err != nil {
			t.Fatal(err)
		}
	}

	cachePath, base := f.rewrite(t, filepath.Join(configsDir, "cache.yml"))
	editCacheOptions(t, cachePath, func(opts map[any]any) {
		opts["offlinegrace"] = "1h"
		opts["authttl"] = "0"  // every request asks the origin: the outage is met on each
		opts["backoff"] = "1h" // a dead origin is still tried when it is the only one
	})
	cache := start(t, "cache.yml", childEnv(), "serve", cachePath)
	waitReady(t, cache, client, base)

	type reply struct {
		status  int
		warning string
		digest  digest.Digest
	}
	do := func(method, path, user, pass string) reply {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		req.Header.Set("Accept", img.MediaType)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s as %q: %v", method, path, user, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %s as %q: reading: %v", method, path, user, err)
		}
		rp := reply{status: resp.StatusCode, warning: resp.Header.Get("Warning")}
		if method == http.MethodGet && resp.StatusCode == http.StatusOK {
			rp.digest = digest.FromBytes(body)
		}
		return rp
	}
	tagPath := "/v2/" + img.Repo + "/manifests/" + img.Tag
	byDigest := "/v2/" + img.Repo + "/manifests/" + img.Digest.String()
	layer := func(im regtest.Image, i int) (string, digest.Digest) {
		d := digest.FromBytes(im.Layers[i])
		return "/v2/" + im.Repo + "/blobs/" + d.String(), d
	}
	l0, d0 := layer(img, 0)
	l1, d1 := layer(img, 1)
	freshLayer, _ := layer(fresh, 0)

	// Before the outage: alice pulls the image; bob pulls it too, then is
	// revoked (his password changes) and refused; a wrong password is
	// refused.
	want := func(rp reply, status int, d digest.Digest, stale bool, what string) {
		t.Helper()
		if rp.status != status || (d != "" && rp.digest != d) || (rp.warning != "") != stale {
			t.Errorf("%s: got %d %s warning %q; want %d %s stale=%v", what, rp.status, rp.digest, rp.warning, status, d, stale)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		want(do(http.MethodGet, tagPath, u, u+"-pw"), 200, img.Digest, false, u+" tag before the outage")
		want(do(http.MethodGet, l0, u, u+"-pw"), 200, d0, false, u+" layer 0 before")
		want(do(http.MethodGet, l1, u, u+"-pw"), 200, d1, false, u+" layer 1 before")
	}
	writeUsers(t, users, "alice", "alice-pw", "bob", "bob-new-pw", "carol", "carol-pw")
	// The origin reloads the file when its modification time changes.
	deadline := time.Now().Add(10 * time.Second)
	for do(http.MethodGet, tagPath, "bob", "bob-pw").status != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the origin still allows bob's old password")
		}
	}
	want(do(http.MethodGet, l0, "bob", "bob-pw"), 401, "", false, "bob revoked, layer")
	want(do(http.MethodGet, tagPath, "alice", "wrong"), 401, "", false, "a wrong password")
	want(do(http.MethodGet, "/v2/", "", ""), 401, "", false, "anonymous ping")

	// The outage: the origin process is killed.
	if err := origin.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-origin.done

	for range 2 { // the second round meets the origin in backoff
		want(do(http.MethodGet, "/v2/", "alice", "alice-pw"), 200, "", true, "alice ping")
		want(do(http.MethodGet, tagPath, "alice", "alice-pw"), 200, img.Digest, true, "alice tag")
		want(do(http.MethodHead, tagPath, "alice", "alice-pw"), 200, "", true, "alice HEAD tag")
		want(do(http.MethodGet, byDigest, "alice", "alice-pw"), 200, img.Digest, true, "alice manifest by digest")
		want(do(http.MethodGet, l0, "alice", "alice-pw"), 200, d0, true, "alice layer 0")
		want(do(http.MethodGet, l1, "alice", "alice-pw"), 200, d1, true, "alice layer 1")
		want(do(http.MethodHead, l1, "alice", "alice-pw"), 200, "", true, "alice HEAD layer 1")

		want(do(http.MethodGet, "/v2/"+img.Repo+"/manifests/never-seen", "alice", "alice-pw"), 503, "", false, "a tag never resolved")
		want(do(http.MethodGet, "/v2/"+fresh.Repo+"/manifests/"+fresh.Tag, "alice", "alice-pw"), 503, "", false, "a repository alice never pulled")
		want(do(http.MethodGet, freshLayer, "alice", "alice-pw"), 503, "", false, "a blob never stored")
		for _, who := range [][2]string{{"carol", "carol-pw"}, {"bob", "bob-pw"}, {"bob", "bob-new-pw"}, {"alice", "wrong"}, {"", ""}} {
			name := who[0] + ":" + who[1]
			want(do(http.MethodGet, tagPath, who[0], who[1]), 503, "", false, name+" tag")
			want(do(http.MethodGet, byDigest, who[0], who[1]), 503, "", false, name+" manifest by digest")
			want(do(http.MethodGet, l0, who[0], who[1]), 503, "", false, name+" layer")
		}
		// Told how to authenticate, as the origin said before it died.
		if rp := do(http.MethodGet, "/v2/", "", ""); rp.status != 401 || rp.warning == "" {
			t.Errorf("anonymous ping in the outage: %d warning %q; want the origin's last 401 marked stale", rp.status, rp.warning)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := cache.stderr.WaitFor(ctx, "result=stale", d0.String()); err != nil {
		t.Fatalf("no request logged with result=stale: %v", err)
	}
	if t.Failed() {
		return
	}

	// Recovery: the origin comes back on the same address and storage; its
	// answers count at once, refusals included.
	origin = start(t, "origin.yml again", childEnv(), "serve", originPath)
	waitReady(t, origin, client, originBase)
	want(do(http.MethodGet, tagPath, "alice", "alice-pw"), 200, img.Digest, false, "alice tag after recovery")
	want(do(http.MethodGet, l0, "alice", "alice-pw"), 200, d0, false, "alice layer after recovery")
	want(do(http.MethodGet, tagPath, "carol", "carol-pw"), 200, img.Digest, false, "carol after recovery")
	want(do(http.MethodGet, tagPath, "bob", "bob-pw"), 401, "", false, "bob's old password after recovery")
	want(do(http.MethodGet, freshLayer, "alice", "alice-pw"), 200, "", false, "a new blob after recovery")
}
