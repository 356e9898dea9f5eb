package origin

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestSignatureNotLoggedByTheApp: a request with cc-* parameters that is
// not a signed blob request goes to distribution's app, which logs each
// request's URI: the parameters are taken off first, so that a signature
// never reaches its log.
func TestSignatureNotLoggedByTheApp(t *testing.T) {
	var logs regtest.Buffer
	logrus.SetOutput(&logs) // distribution's app logs through logrus' standard logger
	t.Cleanup(func() { logrus.SetOutput(io.Discard) })
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	u := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	sig := u.Query().Get("cc-sig")
	alice := pullClient(s.og.URL, "alice", "alicepw")
	for _, path := range []string{
		"/v2/" + s.img.Repo + "/manifests/" + s.img.Tag + "?" + u.RawQuery,
		"/v2/" + s.img.Repo + "/tags/list?" + u.RawQuery,
	} {
		if r := do(t, alice, http.MethodGet, path); r.Status != http.StatusOK {
			t.Fatalf("GET %s: %d", path[:40], r.Status)
		}
	}
	if !strings.Contains(logs.String(), "response completed") {
		t.Fatalf("the app logged no request; the test proves nothing:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), sig) {
		t.Errorf("the app's log holds the signature")
	}
}
