package registry_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"
)

// originTransparentConfig rewrites configs/origin-transparent.yml to run
// here: a free port, a temporary root, a generated signing key and
// htpasswd (admin and alice, password testPass), its caches pointed at
// cacheURL. edit may change the options before it is written.
func originTransparentConfig(t *testing.T, cacheURL string, edit func(opts map[any]any)) (path, base string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(configsDir, "origin-transparent.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[any]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	httpSec, _ := mapAt(doc, "http")
	httpSec["addr"] = addr
	storage, _ := mapAt(doc, "storage")
	fs, _ := mapAt(storage, "filesystem")
	fs["rootdirectory"] = filepath.Join(dir, "root")

	var htpasswd strings.Builder
	for _, u := range []string{"admin", testUser} {
		h, err := bcrypt.GenerateFromPassword([]byte(testPass), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd.WriteString(u + ":" + string(h) + "\n")
	}
	hpPath := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(hpPath, []byte(htpasswd.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, _ := mapAt(doc, "auth")
	hp, _ := mapAt(auth, "htpasswd")
	hp["path"] = hpPath

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "origin-ed25519.pem")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	mw, _ := mapAt(doc, "middleware")
	entry := mw["registry"].([]any)[0].(map[any]any)
	opts, _ := mapAt(entry, "options")
	opts["signingkey"] = keyPath
	for _, c := range opts["caches"].([]any) {
		c.(map[any]any)["host"] = cacheURL
	}
	if edit != nil {
		edit(opts)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "origin-transparent.yml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, "http://" + addr
}

// TestOriginTransparentConfig: the binary runs the sample origin
// configuration: it serves the public keys and the content cache API.
func TestOriginTransparentConfig(t *testing.T) {
	cache := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(cache.Close)
	path, base := originTransparentConfig(t, cache.URL, nil)
	p := start(t, "origin-transparent.yml", childEnv("OTEL_TRACES_EXPORTER=none"), "serve", path)
	client := &http.Client{}
	waitReady(t, p, client, base)

	get := func(path, user string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, testPass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String()
	}
	status, body := get("/api/v0/content_caches/keys", "")
	var jwks struct {
		Keys []map[string]any `json:"keys"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &jwks) != nil || len(jwks.Keys) != 1 || jwks.Keys[0]["crv"] != "Ed25519" {
		t.Fatalf("keys: %d %q", status, body)
	}
	if status, body := get("/api/v0/content_caches", ""); status != http.StatusUnauthorized {
		t.Fatalf("anonymous list: %d %q", status, body)
	}
	status, body = get("/api/v0/content_caches", testUser)
	if status != http.StatusOK || !strings.Contains(body, `"name":"region-asia"`) || !strings.Contains(body, `"name":"office-lan"`) {
		t.Fatalf("list: %d %q", status, body)
	}
	if status, body := get("/v2/", testUser); status != http.StatusOK {
		t.Fatalf("/v2/: %d %q", status, body)
	}
}

// TestOriginTransparentBadConfig: a bad option stops startup with one line
// naming it.
func TestOriginTransparentBadConfig(t *testing.T) {
	path, _ := originTransparentConfig(t, "http://127.0.0.1:1", func(opts map[any]any) {
		opts["signaturettl"] = "5 minutes"
	})
	code, _, stderr := runToExit(t, childEnv(), "serve", path)
	want := `option "signaturettl": found string "5 minutes", expected a positive duration such as 5m`
	if code != 1 || !strings.Contains(stderr, want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q; want 1 and one line with %q", code, stderr, want)
	}
}
