package downstream_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// containerd sends ?ns=<registry> to a mirror. An ns that is not the
// origin's gets 404 NAME_UNKNOWN naming both, and nothing is asked
// upstream; no ns, or the origin's own, is answered as the origin answers.
func TestNamespaceParameter(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(44, 1, 1000)
	img.Repo = "public/app"
	push(t, origin, img)
	bob := ociAccept()
	bob.Set("Authorization", basic("bob", "bob-pw"))
	paths := []string{
		"/v2/",
		"/v2/public/app/manifests/" + img.Tag,
		"/v2/public/app/manifests/" + img.Digest.String(),
		"/v2/public/app/blobs/" + digest.FromBytes(img.Layers[0]).String(),
		"/v2/public/app/tags/list",
		"/v2/_catalog",
	}
	// Refused: another registry, or the origin's host on another port.
	for _, ns := range []string{"docker.io", "ghcr.io", "127.0.0.1", "127.0.0.1:1", "evil.example.com:" + strings.Split(origin.Host, ":")[1]} {
		for _, p := range paths {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				before := total(origin.Counts.Snapshot())
				a := ask(t, cache.URL, method, p+"?ns="+url.QueryEscape(ns), bob)
				if n := total(origin.Counts.Snapshot()) - before; n != 0 {
					t.Errorf("ns=%s %s %s: the cache sent the origin %d requests, want 0", ns, method, p, n)
				}
				if a.status != http.StatusNotFound {
					t.Errorf("ns=%s %s %s: status %d, want 404", ns, method, p, a.status)
					continue
				}
				if method == http.MethodHead {
					continue
				}
				var body struct {
					Errors []struct {
						Code, Message string
						Detail        map[string]string
					}
				}
				if err := json.Unmarshal(a.body, &body); err != nil || len(body.Errors) != 1 {
					t.Fatalf("ns=%s %s: body %q is not one OCI error: %v", ns, p, a.body, err)
				}
				e := body.Errors[0]
				if e.Code != "NAME_UNKNOWN" || !strings.Contains(e.Message, `"`+ns+`"`) || !strings.Contains(e.Message, origin.Host) ||
					e.Detail["ns"] != ns || e.Detail["origin"] != origin.Host {
					t.Errorf("ns=%s %s: error %+v, want NAME_UNKNOWN naming %q and %s", ns, p, e, ns, origin.Host)
				}
			}
		}
	}
	// Passed: no ns, an empty one, or the origin's own host (any case).
	for _, q := range []string{"", "?ns=", "?ns=" + origin.Host, "?ns=" + url.QueryEscape(origin.Host) + "&ns="} {
		for _, p := range paths {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				// The origin ignores ns; compared with the same query.
				o, _ := sameAnswer(t, "ns "+q, origin, cache, method, p+q, bob, "Content-Type", "Content-Length", "Docker-Content-Digest")
				if o.status != http.StatusOK && method == http.MethodGet {
					t.Fatalf("%s %s%s: origin answered %d; the case tests nothing", method, p, q, o.status)
				}
			}
		}
	}
}
