package origin

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	gorhandlers "github.com/gorilla/handlers"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// writeKey writes a fixed Ed25519 private key (PKCS#8 PEM) into dir.
func writeKey(t *testing.T, dir string, seedByte byte) string {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = seedByte
	}
	pemBytes, err := signature.MarshalPrivateKeyPEM(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "origin-ed25519.pem")
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// testOrigin is an in-process distribution registry with the middleware
// and its HTTP handler, as the registry binary builds them.
type testOrigin struct {
	URL    string
	Root   string
	Origin *Origin
	Counts *originCounts // what the origin served (transparent_helpers_test.go)
	// AccessLog is distribution's access log (gorilla's combined log, as
	// the registry binary writes it to stdout).
	AccessLog *regtest.Buffer
	// validator checks every API response against the OpenAPI document
	// (openapi_test.go); the test fails at cleanup on a mismatch.
	validator *apiValidator
	stop      func()
}

// startOrigin serves a registry over the filesystem storage under root
// ("" for a fresh one) with auth and the middleware's options (signingkey
// and admins added when absent). Probes are manual; clock drives expiry.
func startOrigin(t *testing.T, auth configuration.Auth, root string, extra map[string]any, clock *regtest.Clock) *testOrigin {
	t.Helper()
	return startOriginWith(t, auth, root, extra, Options{Now: clock.Now, ManualProbes: true})
}

// startOriginWith is startOrigin with the instance's Options.
func startOriginWith(t *testing.T, auth configuration.Auth, root string, extra map[string]any, o Options) *testOrigin {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	opts := map[string]any{
		"signingkey": writeKey(t, t.TempDir(), 7),
		"admins":     []any{"admin"},
	}
	maps.Copy(opts, extra)
	SetOptions(opts, o)
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem":  configuration.Parameters{"rootdirectory": root},
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
		Auth: auth,
		Middleware: map[string][]configuration.Middleware{
			"registry": {{Name: Name, Options: opts}},
		},
	}
	cfg.HTTP.Secret = "origin-test-secret"
	cfg.Log.AccessLog.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	app := handlers.NewApp(ctx, cfg)
	counts := &originCounts{}
	// As the registry binary stacks them: the access log inside the
	// middleware's handler.
	accessLog := &regtest.Buffer{}
	validator := newAPIValidator(t)
	t.Cleanup(func() { validator.report(t) })
	srv := httptest.NewServer(counts.wrap(validator.wrap(Wrap(cfg, gorhandlers.CombinedLoggingHandler(accessLog, app)))))
	og, ok := Instance(cfg)
	if !ok {
		t.Fatal("no instance after NewApp")
	}
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		srv.Close()
		_ = app.Shutdown()
		cancel()
		_ = og.Close()
	}
	t.Cleanup(stop)
	return &testOrigin{URL: srv.URL, Root: root, Origin: og, Counts: counts, AccessLog: accessLog, validator: validator, stop: stop}
}

// noRedirects is an HTTP client that shows a redirect instead of following
// it.
func noRedirects() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// pullClient authenticates as user (Basic or token, per the challenge) and
// does not follow redirects.
func pullClient(base, user, pass string) *regtest.Client {
	return &regtest.Client{Base: base, User: user, Pass: pass, HTTP: noRedirects()}
}

// result is a response read whole.
type result struct {
	Status int
	Header http.Header
	Body   string
}

func do(t *testing.T, c *regtest.Client, method, path string) result {
	t.Helper()
	// Distribution hides OCI manifests from clients that do not accept them.
	hdr := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
	resp, err := c.Do(t.Context(), method, path, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, string(b)}
}

// api sends a JSON API request with Basic credentials (user "" for none)
// or, when user starts with "Bearer ", that Authorization header.
func api(t *testing.T, base, user, pass, method, path, body string) result {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case strings.HasPrefix(user, "Bearer "):
		req.Header.Set("Authorization", user)
	case user != "":
		req.SetBasicAuth(user, pass)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, string(b)}
}

// errorMessage is the first error's message of an API error body.
func errorMessage(t *testing.T, r result) string {
	t.Helper()
	var body struct {
		Errors []apiError `json:"errors"`
	}
	if err := json.Unmarshal([]byte(r.Body), &body); err != nil || len(body.Errors) == 0 {
		t.Fatalf("not an API error body (%d): %q", r.Status, r.Body)
	}
	return body.Errors[0].Message
}

// fakeCache stands for a content cache: it answers anything with 200.
func fakeCache(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(s.Close)
	return s
}

func digestOf(b []byte) string { return digest.FromBytes(b).String() }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func seeded(b byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	return ed25519.NewKeyFromSeed(seed)
}
