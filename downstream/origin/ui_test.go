package origin

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// pageClient is a browser-like HTTP client: a cookie jar, no redirects
// followed.
func pageClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func getPage(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func postForm(t *testing.T, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// TestPagesSignInWithToken: with token auth the sign-in form's password
// is exchanged at the token realm (as docker login does); a wrong one is
// refused. The session cookie is HttpOnly and SameSite=Strict, lasts
// SessionTTL, and the pages carry the security headers and no script.
// Basic credentials alone never open a page.
func TestPagesSignInWithToken(t *testing.T) {
	ts := regtest.NewTokenServer(t, testUsers, func(user, repo string) []string { return []string{"pull"} })
	clock := &regtest.Clock{}
	og := startOrigin(t, ts.AuthConfig(), "", nil, clock)
	c := pageClient(t)

	// Basic credentials are not a session.
	req, _ := http.NewRequest(http.MethodGet, og.URL+"/ui/", nil)
	req.SetBasicAuth("alice", "alicepw")
	if resp, err := c.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/signin" {
		t.Fatalf("GET /ui/ with Basic credentials: %v %v, want 303 to the sign-in page", resp, err)
	}

	resp, body := getPage(t, c, og.URL+"/ui/signin")
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
	} {
		if !strings.Contains(resp.Header.Get(h), want) {
			t.Errorf("%s: %q, want %q", h, resp.Header.Get(h), want)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("the sign-in page has a script")
	}
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token on the sign-in form:\n%s", body)
	}
	before := ts.Requests()
	resp, body = postForm(t, c, og.URL+"/ui/signin", url.Values{"csrf": {m[1]}, "username": {"alice"}, "password": {"wrong"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "wrong user name or password") {
		t.Fatalf("a wrong password: %d", resp.StatusCode)
	}
	if ts.Requests() == before {
		t.Error("the wrong password was not asked of the token realm")
	}
	resp, _ = postForm(t, c, og.URL+"/ui/signin", url.Values{"username": {"alice"}, "password": {"alicepw"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without its CSRF token: %d, want 403", resp.StatusCode)
	}
	resp, _ = postForm(t, c, og.URL+"/ui/signin", url.Values{"csrf": {m[1]}, "username": {"alice"}, "password": {"alicepw"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("sign-in: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			session = ck
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != uiPath || session.MaxAge != int(SessionTTL/time.Second) {
		t.Fatalf("session cookie %+v", session)
	}
	resp, body = getPage(t, c, og.URL+"/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Signed in as <strong>alice</strong>") || !strings.Contains(body, `href="/api/v0/openapi.yaml"`) {
		t.Fatalf("alice's page: %d\n%s", resp.StatusCode, body)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("alice's page Cache-Control %q", resp.Header.Get("Cache-Control"))
	}

	// A forged cookie, or an expired one, is no session.
	forged := pageClient(t)
	u, _ := url.Parse(og.URL + "/ui/")
	forged.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: strings.Replace(session.Value, ".", "x.", 1)}})
	if resp, _ := getPage(t, forged, og.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a forged session cookie: %d, want 303 to sign in", resp.StatusCode)
	}
	clock.Advance(SessionTTL)
	if resp, _ := getPage(t, c, og.URL+"/ui/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after SessionTTL: %d, want 303 to sign in", resp.StatusCode)
	}
}

// TestPagesSignOut: signing out needs the CSRF token and ends the session
// in the browser.
func TestPagesSignOut(t *testing.T) {
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	c := pageClient(t)
	_, body := getPage(t, c, og.URL+"/ui/signin")
	tok := csrfRE.FindStringSubmatch(body)[1]
	if resp, _ := postForm(t, c, og.URL+"/ui/signin", url.Values{"csrf": {tok}, "username": {"admin"}, "password": {"adminpw"}}); resp.Header.Get("Location") != "/ui/admin" {
		t.Fatalf("an admin's sign-in goes to %q", resp.Header.Get("Location"))
	}
	_, body = getPage(t, c, og.URL+"/ui/admin")
	tok = csrfRE.FindStringSubmatch(body)[1]
	if resp, _ := postForm(t, c, og.URL+"/ui/signout", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-out without the token: %d, want 403", resp.StatusCode)
	}
	if resp, _ := postForm(t, c, og.URL+"/ui/signout", url.Values{"csrf": {tok}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign-out: %d", resp.StatusCode)
	}
	if resp, _ := getPage(t, c, og.URL+"/ui/admin"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign-out: %d, want 303 to sign in", resp.StatusCode)
	}
}
