package origin

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"
)

// Fixes from the security review of the transparent caches (issue 22).
// Each test failed before its fix.

// TestSettingsNameCheckedFirst: the cache name of a settings PATCH is
// checked before any storage read. A name that walks out of the caches'
// directory once answered 200 when it reached another user's settings
// file and 400 when not (an oracle on who has a setting), and a name such
// as "x/../edge" was stored as given.
func TestSettingsNameCheckedFirst(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	register(t, og, "", "edge", cache.URL)
	assign(t, og, "", "bob", "edge") // bob has a setting; carol has none
	b64 := func(u string) string { return base64.RawURLEncoding.EncodeToString([]byte(u)) }
	var answers []string
	for _, name := range []string{"../accounts/" + b64("bob"), "../accounts/" + b64("carol"), "x/../edge", "./edge", "edge/", "EDGE", "../caches/edge"} {
		r := api(t, og.URL, "alice", "alicepw", http.MethodPatch, accountsPrefix+"alice/settings", `{"contentCache": "`+name+`"}`)
		if r.Status != http.StatusBadRequest {
			t.Errorf("contentCache %q: %d %q, want 400", name, r.Status, r.Body)
			continue
		}
		msg := errorMessage(t, r)
		if !strings.Contains(msg, "is not a valid cache name") {
			t.Errorf("contentCache %q: message %q, want it to say the name is not valid", name, msg)
		}
		answers = append(answers, strings.Replace(msg, name, "NAME", 1))
	}
	if len(answers) >= 2 && answers[0] != answers[1] {
		t.Errorf("the answers tell whether bob has a setting:\n%s\n%s", answers[0], answers[1])
	}
	if r := api(t, og.URL, "alice", "alicepw", http.MethodGet, accountsPrefix+"alice/settings", ""); r.Body != "{\"contentCache\":\"\"}\n" {
		t.Errorf("alice's setting after the refused PATCHes: %q", r.Body)
	}
	// The admin's DELETE takes no such path either.
	if r := api(t, og.URL, "admin", "adminpw", http.MethodDelete, cachesPath+"/..", ""); r.Status != http.StatusNotFound {
		t.Errorf("DELETE %s/..: %d %q, want 404", cachesPath, r.Status, r.Body)
	}
}

// TestExactFieldNames: Go's encoding/json matches field names without
// regard to case; the API takes only the documented names.
func TestExactFieldNames(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	register(t, og, "", "edge", cache.URL)
	for _, tc := range []struct{ method, path, body, field string }{
		{http.MethodPatch, accountsPrefix + "alice/settings", `{"ContentCache": "edge"}`, "ContentCache"},
		{http.MethodPatch, accountsPrefix + "alice/settings", `{"contentcache": "edge"}`, "contentcache"},
		{http.MethodPost, cachesPath, `{"Name": "other", "host": "` + cache.URL + `"}`, "Name"},
		{http.MethodPost, cachesPath, `{"name": "other", "HOST": "` + cache.URL + `"}`, "HOST"},
	} {
		user, pass := "alice", "alicepw"
		if tc.method == http.MethodPost {
			user, pass = "admin", "adminpw"
		}
		r := api(t, og.URL, user, pass, tc.method, tc.path, tc.body)
		if r.Status != http.StatusBadRequest || !strings.Contains(errorMessage(t, r), `unknown field "`+tc.field+`"`) {
			t.Errorf("%s %s %s: %d %q, want 400 naming the field", tc.method, tc.path, tc.body, r.Status, r.Body)
		}
	}
	if r := api(t, og.URL, "admin", "adminpw", http.MethodGet, cachesPath+"/other", ""); r.Status != http.StatusNotFound {
		t.Errorf("a cache was created from misnamed fields: %d %q", r.Status, r.Body)
	}
}

// TestUnparsedSignatureNotLogged: a signed query the app's parser does not
// see as such (pairs joined with ';', which url.ParseQuery drops while the
// raw query keeps them, or names percent-encoded on a route that is not a
// blob) is redacted before distribution sees the request: neither its
// access log nor its own log (the "error authorizing context" warning,
// the debug lines) holds the signature.
func TestUnparsedSignatureNotLogged(t *testing.T) {
	logs := captureStdLogs(t) // distribution's app logs through logrus' standard logger
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	u := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	sig := u.Query().Get("cc-sig")
	semicolons := strings.ReplaceAll(u.RawQuery, "&", ";")
	encoded := strings.ReplaceAll(u.RawQuery, "cc-", "cc%2D")
	upper := strings.ReplaceAll(u.RawQuery, "cc-", "%43C-")
	manifest := "/v2/" + s.img.Repo + "/manifests/" + s.img.Tag
	tags := "/v2/" + s.img.Repo + "/tags/list"
	for _, q := range []string{semicolons, encoded, upper, "n=5;" + u.RawQuery} {
		for _, path := range []string{manifest, tags, s.blobPath} {
			for _, user := range []string{"alice", ""} { // anonymous: the app's authorization warning
				do(t, pullClient(s.og.URL, user, "alicepw"), http.MethodGet, path+"?"+q)
			}
		}
	}
	if !strings.Contains(s.og.AccessLog.String(), "/tags/list") || !strings.Contains(logs.String(), "error authorizing context") {
		t.Fatalf("the app logged nothing the test expects; it proves nothing:\n%s\n%s", s.og.AccessLog.String(), logs.String())
	}
	if strings.Contains(s.og.AccessLog.String(), sig) {
		t.Errorf("distribution's access log holds the signature")
	}
	if strings.Contains(logs.String(), sig) {
		t.Errorf("distribution's log holds the signature")
	}
}

// TestViaCaseInsensitive: a request a content cache sent is recognised by
// its Via token whatever the letter case (header values are compared
// case-insensitively here, as RFC 9110 makes the protocol names): it is
// served, not redirected back to a cache.
func TestViaCaseInsensitive(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	alice := pullClient(s.og.URL, "alice", "alicepw")
	for _, via := range []string{"1.1 content-cache-0123abcd", "1.1 Content-Cache-0123ABCD", "1.1 CONTENT-CACHE-0123abcd"} {
		resp, err := alice.Do(t.Context(), http.MethodGet, s.blobPath, http.Header{"Via": {via}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("Via %q: %d, want 200 (served, not redirected)", via, resp.StatusCode)
		}
	}
}

// TestCacheStripsSignatureBeforeDistribution: a signed URL the cache's
// router does not take (a trailing '/', '//', '/./', 'b/../a', 'BLOBS', a
// capitalised digest) goes to distribution's app, which answers it (301,
// 404) and writes its URI to the access log at info level: the cache
// takes every cc-* parameter off first.
func TestCacheStripsSignatureBeforeDistribution(t *testing.T) {
	logs := captureStdLogs(t)
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	u := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	sig := u.Query().Get("cc-sig")
	repo, dgst := s.img.Repo, digestOf(s.img.Layers[0])
	first, rest, _ := strings.Cut(repo, "/")
	if rest == "" {
		first, rest = "x", repo
	}
	hex := strings.TrimPrefix(dgst, "sha256:")
	paths := []string{
		s.blobPath + "/",
		"/v2/" + repo + "//blobs/" + dgst,
		"/v2//" + repo + "/blobs/" + dgst,
		"/v2/" + repo + "/./blobs/" + dgst,
		"/v2/" + first + "/b/../" + rest + "/blobs/" + dgst,
		"/v2/" + repo + "/BLOBS/" + dgst,
		"/v2/" + repo + "/blobs/SHA256:" + strings.ToUpper(hex),
		"/v2/" + repo + "/blobs/sha256:" + strings.ToUpper(hex),
	}
	cacheBase := u.Scheme + "://" + u.Host
	for _, p := range paths {
		for _, q := range []string{u.RawQuery, strings.ReplaceAll(u.RawQuery, "&", ";"), strings.ReplaceAll(u.RawQuery, "cc-", "cc%2D")} {
			resp := send(t, http.MethodGet, cacheBase+p+"?"+q)
			if resp.StatusCode == http.StatusOK {
				t.Errorf("GET %s at the cache: 200; the route was taken", p)
			}
		}
	}
	access := s.cache.AccessLog.String()
	if strings.Count(access, "\n") < len(paths) {
		t.Fatalf("distribution's access log has %d lines for %d paths; the test proves nothing:\n%s", strings.Count(access, "\n"), len(paths), access)
	}
	if strings.Contains(access, sig) {
		t.Errorf("distribution's access log at the cache holds the signature:\n%s", access)
	}
	if strings.Contains(logs.String(), sig) || strings.Contains(s.logs.String(), sig) {
		t.Errorf("a log at the cache holds the signature")
	}
}

// TestCacheForwardsNoSignature: what the cache forwards to its upstream
// with the client's query (the ping, tag lists, the catalog, referrers,
// an item's error body) carries no cc-* parameter, however it is written,
// nor a pair that does not parse.
func TestCacheForwardsNoSignature(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	u := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	sig := u.Query().Get("cc-sig")
	cacheBase := u.Scheme + "://" + u.Host
	before := len(s.og.Counts.nonBlobURIs())
	alice := pullClient(cacheBase, "alice", "alicepw")
	for _, p := range []string{"/v2/", "/v2/" + s.img.Repo + "/tags/list", "/v2/_catalog", "/v2/" + s.img.Repo + "/manifests/nope"} {
		for _, q := range []string{u.RawQuery, strings.ReplaceAll(u.RawQuery, "&", ";"), strings.ReplaceAll(u.RawQuery, "cc-", "cc%2D"), "n=5;" + u.RawQuery} {
			do(t, alice, http.MethodGet, p+"?"+q)
		}
	}
	uris := s.og.Counts.nonBlobURIs()[before:]
	if len(uris) == 0 {
		t.Fatal("the cache forwarded nothing; the test proves nothing")
	}
	for _, uri := range uris {
		if strings.Contains(uri, sig) || strings.Contains(strings.ToLower(uri), "cc-") || strings.Contains(uri, ";") {
			t.Errorf("the cache forwarded %s", uri)
		}
	}
}

// TestCacheRefusesFarExpiry: a genuine signature whose expiry lies further
// out than the cache's signing.maxexpiry (default 1h) is refused; one
// within it is served.
func TestCacheRefusesFarExpiry(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	u := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	cacheBase := u.Scheme + "://" + u.Host
	sign := func(exp time.Time) string {
		q := originSigner(t).Sign(signature.Claims{Method: http.MethodGet, Repository: s.img.Repo, Digest: digestOf(s.img.Layers[0]),
			Expiry: exp, Cache: "region-asia"})
		return cacheBase + s.blobPath + "?" + q.Encode()
	}
	now := s.clock.Now()
	for _, exp := range []time.Time{now.Add(61 * time.Minute), now.Add(24 * time.Hour), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)} {
		resp := send(t, http.MethodGet, sign(exp))
		b := body(resp)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(b, "signing.maxexpiry") {
			t.Errorf("expiry %s: %d %.200q, want 401 naming signing.maxexpiry", exp, resp.StatusCode, b)
		}
	}
	if resp := send(t, http.MethodGet, sign(now.Add(59*time.Minute))); resp.StatusCode != http.StatusOK {
		t.Errorf("expiry in 59m: %d, want 200", resp.StatusCode)
	}
}

// captureStdLogs sends logrus' standard logger (distribution's) to a
// buffer at debug level for the test.
func captureStdLogs(t *testing.T) *regtest.Buffer {
	logs := &regtest.Buffer{}
	std := logrus.StandardLogger()
	out, level := std.Out, std.GetLevel()
	logrus.SetOutput(logs)
	logrus.SetLevel(logrus.DebugLevel)
	t.Cleanup(func() {
		logrus.SetOutput(out)
		logrus.SetLevel(level)
	})
	return logs
}
