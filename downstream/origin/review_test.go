package origin

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

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
	logs := &regtest.Buffer{}
	std := logrus.StandardLogger()
	out, level := std.Out, std.GetLevel()
	logrus.SetOutput(logs) // distribution's app logs through logrus' standard logger
	logrus.SetLevel(logrus.DebugLevel)
	t.Cleanup(func() {
		logrus.SetOutput(out)
		logrus.SetLevel(level)
	})
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
