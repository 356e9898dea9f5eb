package downstream_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestMalformedNamespaceRefused: an ns that is not a registry's
// host[:port] is refused (400 NAME_INVALID), never compared leniently:
// "127.0.0.1:15000:80" was read as an origin at 127.0.0.1:15000 (the
// default port cut off).
func TestMalformedNamespaceRefused(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	cache := regtest.StartCache(t, origin.URL, nil)
	bob := ociAccept()
	bob.Set("Authorization", basic("bob", "bob-pw"))
	for _, ns := range []string{origin.Host + ":80", origin.Host + ":443", origin.Host + ":", "[" + origin.Host + "]", origin.Host + "/x", "user@" + origin.Host, origin.Host + ":+1", " " + origin.Host, "-a.example:80"} {
		before := total(origin.Counts.Snapshot())
		a := ask(t, cache.URL, http.MethodGet, "/v2/?ns="+url.QueryEscape(ns), bob)
		if n := total(origin.Counts.Snapshot()) - before; n != 0 {
			t.Errorf("ns=%q: the cache sent the origin %d requests, want 0", ns, n)
		}
		var body struct {
			Errors []struct{ Code, Message string }
		}
		if err := json.Unmarshal(a.body, &body); a.status != http.StatusBadRequest || err != nil || len(body.Errors) != 1 ||
			body.Errors[0].Code != "NAME_INVALID" || !strings.Contains(body.Errors[0].Message, "not a registry host[:port]") {
			t.Errorf("ns=%q: %d %s, want 400 NAME_INVALID saying it is not a registry host[:port]", ns, a.status, a.body)
		}
	}
	// Well-formed names of the origin still pass.
	for _, ns := range []string{origin.Host, strings.ToUpper(origin.Host)} {
		if a := ask(t, cache.URL, http.MethodGet, "/v2/?ns="+url.QueryEscape(ns), bob); a.status != http.StatusOK {
			t.Errorf("ns=%q: %d %s, want 200", ns, a.status, a.body)
		}
	}
}

// TestLoopIsDetectedAnyCase: a proxy between chained caches that changes
// the case of Via does not hide a loop.
func TestLoopIsDetectedAnyCase(t *testing.T) {
	var target atomic.Pointer[url.URL]
	var hops atomic.Int64 // the most Via tokens seen on one request
	loopback := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		// The most caches one request passed: two once round the loop.
		n := int64(strings.Count(strings.ToLower(strings.Join(pr.In.Header.Values("Via"), ",")), "content-cache-"))
		for old := hops.Load(); n > old && !hops.CompareAndSwap(old, n); old = hops.Load() {
		}
		pr.SetURL(target.Load())
		pr.Out.Header.Del("Via")
		for _, v := range pr.In.Header.Values("Via") {
			pr.Out.Header.Add("Via", strings.ToUpper(v))
		}
	}})
	t.Cleanup(loopback.Close)
	b := regtest.StartCache(t, loopback.URL, nil)
	a := regtest.StartCache(t, b.URL, nil)
	u, _ := url.Parse(a.URL)
	target.Store(u)
	status, _, body := get(t, &regtest.Client{Base: a.URL}, http.MethodGet, "/v2/any/repo/manifests/latest", nil)
	if status != http.StatusLoopDetected || !strings.Contains(string(body), "LOOP_DETECTED") {
		t.Fatalf("status %d %s, want 508 LOOP_DETECTED", status, body)
	}
	if n := hops.Load(); n != 2 {
		t.Fatalf("a request reached the loop's proxy having passed %d caches, want 2 (a and b once)", n)
	}
}
