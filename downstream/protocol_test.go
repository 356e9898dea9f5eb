package downstream_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// headerRecorder is an upstream that answers every request with 404 and
// keeps the X-Forwarded-For values it received, by path.
type headerRecorder struct {
	mu  sync.Mutex
	xff map[string][]string
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.xff[r.Method+" "+r.URL.Path] = r.Header.Values("X-Forwarded-For")
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"errors":[{"code":"NOT_FOUND"}]}`))
}

func (h *headerRecorder) get(key string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.xff[key]
}

// The upstream sees the address the cache saw as the last X-Forwarded-For
// entry, after whatever the client itself wrote.
func TestForwardedForAppendsClientAddress(t *testing.T) {
	rec := &headerRecorder{xff: map[string][]string{}}
	up := httptest.NewServer(rec)
	t.Cleanup(up.Close)
	cache := regtest.StartCache(t, up.URL, nil)
	blob := "/v2/r/blobs/sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

	for _, tc := range []struct {
		name   string
		sent   []string
		method string
		path   string
		want   string
	}{
		{"none sent, ping", nil, http.MethodGet, "/v2/", "127.0.0.1"},
		{"one sent, ping", []string{"203.0.113.7"}, http.MethodGet, "/v2/", "203.0.113.7, 127.0.0.1"},
		{"two lines sent, blob", []string{"203.0.113.7", "198.51.100.1, 192.0.2.9"}, http.MethodHead, blob, "203.0.113.7, 198.51.100.1, 192.0.2.9, 127.0.0.1"},
		{"none sent, manifest", nil, http.MethodGet, "/v2/r/manifests/latest", "127.0.0.1"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), tc.method, cache.URL+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["X-Forwarded-For"] = tc.sent
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		resp.Body.Close()
		got := rec.get(tc.method + " " + tc.path)
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: upstream got X-Forwarded-For %q, want [%q]", tc.name, got, tc.want)
		}
	}
}

// ask sends one request with the given headers to base.
func ask(t *testing.T, base, method, path string, hdr http.Header) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	// Redirects are answers to compare, not to follow.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body}
}

// sameAnswer asks the origin and the cache the same request and reports
// every difference in status, body and the named headers ("" in a header
// means it must be absent from both or present in both with equal values).
func sameAnswer(t *testing.T, name string, origin, cache *regtest.Server, method, path string, hdr http.Header, headers ...string) (o, c answer) {
	t.Helper()
	o = ask(t, origin.URL, method, path, hdr)
	c = ask(t, cache.URL, method, path, hdr)
	if o.status != c.status {
		t.Errorf("%s: %s %s: cache answered %d, origin %d (cache body %.200q, origin body %.200q)", name, method, path, c.status, o.status, c.body, o.body)
		return o, c
	}
	if !bytes.Equal(o.body, c.body) {
		t.Errorf("%s: %s %s: cache body %.200q, origin body %.200q", name, method, path, c.body, o.body)
	}
	for _, h := range headers {
		if got, want := c.header.Values(h), o.header.Values(h); !slices.Equal(got, want) {
			t.Errorf("%s: %s %s: cache %s %q, origin %q", name, method, path, h, got, want)
		}
	}
	return o, c
}

// HEAD of something missing or refused: the origin's Content-Length is the
// length of the error body it would send to a GET, not 0.
func TestHeadErrorContentLength(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(40, 1, 1000)
	img.Repo = "public/app"
	push(t, origin, img)
	bob := http.Header{"Authorization": {basic("bob", "bob-pw")}}
	missing := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name, path string
		hdr        http.Header
	}{
		{"missing blob", "/v2/public/app/blobs/" + missing, bob},
		{"missing manifest by digest", "/v2/public/app/manifests/" + missing, bob},
		{"missing tag", "/v2/public/app/manifests/nope", bob},
		{"anonymous blob", "/v2/public/app/blobs/" + digest.FromBytes(img.Layers[0]).String(), nil},
		{"anonymous manifest", "/v2/public/app/manifests/" + img.Tag, nil},
		{"anonymous tags", "/v2/public/app/tags/list", nil},
	} {
		o, _ := sameAnswer(t, tc.name, origin, cache, http.MethodHead, tc.path, tc.hdr, "Content-Length", "Content-Type", "WWW-Authenticate")
		if o.status < 400 || o.header.Get("Content-Length") == "0" {
			t.Fatalf("%s: origin answered %d with Content-Length %q; the case tests nothing", tc.name, o.status, o.header.Get("Content-Length"))
		}
	}
}

// A path with a trailing slash too many (or missing) is redirected by the
// origin's router (StrictSlash); the cache answers the same, and asks no
// upstream.
func TestTrailingSlashRedirects(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	cache := regtest.StartCache(t, origin.URL, nil)
	img := regtest.RandomImage(41, 1, 1000)
	img.Repo = "public/app"
	push(t, origin, img)
	bob := http.Header{"Authorization": {basic("bob", "bob-pw")}}
	layer := "/v2/public/app/blobs/" + digest.FromBytes(img.Layers[0]).String()
	for _, path := range []string{
		"/v2/public/app/manifests/" + img.Tag + "/",
		"/v2/public/app/manifests/" + img.Digest.String() + "/",
		layer + "/",
		"/v2/_catalog/",
		"/v2/public/app/tags/list/",
		"/v2",
		"/v2/_catalog/?n=1",
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			before := total(origin.Counts.Snapshot())
			o, _ := sameAnswer(t, "trailing slash", origin, cache, method, path, bob, "Location", "Content-Type", "Content-Length")
			if o.status != http.StatusMovedPermanently {
				t.Fatalf("%s %s: origin answered %d, want 301; the case tests nothing", method, path, o.status)
			}
			// One request is the test's own to the origin.
			if n := total(origin.Counts.Snapshot()) - before - 1; n != 0 {
				t.Errorf("%s %s: the cache sent the origin %d requests, want 0", method, path, n)
			}
		}
	}
}

// total sums a server's request counts.
func total(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}
