package regtest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
)

// FakeGCSVersion is the GCS server the tests run, as pinned in the
// Makefile (`make tools`).
const FakeGCSVersion = "v1.56.1"

// gcsChunk is the gcs driver's chunk size in the tests. The driver opens
// resumable uploads at https://www.googleapis.com whatever the endpoint
// (gcs.go, newSession), which no emulator can serve: a blob of a chunk or
// more cannot be stored there. Below a chunk, the driver uploads in one
// request through the storage library, which STORAGE_EMULATOR_HOST points
// at the emulator.
const gcsChunk = 16 << 20

// StartGCS starts fake-gcs-server over a temporary directory, with one
// bucket, and returns distribution's gcs driver on it. It sets
// STORAGE_EMULATOR_HOST for the test (no t.Parallel). Blobs must stay
// under GCSMaxBlob.
func StartGCS(t testing.TB) Storage {
	t.Helper()
	bin := Tool(t, "fake-gcs-server", "bin/fake-gcs-server")
	dir := t.TempDir()
	addr := FreeAddr(t)
	host, port := splitHostPort(t, addr)
	srv := startServer(t, "fake-gcs-server", addr, nil, gcsOp, nil, bin,
		"-scheme", "http", "-host", host, "-port", port,
		// Downloads are routed by Host: the proxy's.
		"-public-host", "{proxy}", "-external-url", "http://{proxy}",
		"-backend", "filesystem", "-filesystem-root", dir, "-log-level", "error")
	// The filesystem back end keeps a bucket's objects under dir/bucket.
	srv.Dir = filepath.Join(dir, "cache")
	t.Setenv("STORAGE_EMULATOR_HOST", srv.URL)
	resp, err := http.Post(srv.URL+"/storage/v1/b?project=regtest", "application/json", strings.NewReader(`{"name":"cache"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("creating the bucket: %s", resp.Status)
	}
	return Storage{
		Driver: "gcs",
		Params: configuration.Parameters{
			"bucket":      "cache",
			"chunksize":   gcsChunk,
			"credentials": fakeServiceAccount(t),
		},
		Shared: true,
		Server: srv,
	}
}

// GCSMaxBlob is the largest blob the gcs driver can store on the emulator
// (see gcsChunk).
const GCSMaxBlob = gcsChunk - 1

// fakeServiceAccount is a service account key of its own, with a token
// endpoint on loopback: the driver needs credentials to start (without
// them it looks for Google's metadata server), and signs with the key.
func fakeServiceAccount(t testing.TB) map[any]any {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	var pemKey bytes.Buffer
	_ = pem.Encode(&pemKey, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"regtest","token_type":"Bearer","expires_in":3600}`))
	}))
	t.Cleanup(tokens.Close)
	return map[any]any{
		"type":           "service_account",
		"project_id":     "regtest",
		"private_key_id": "regtest",
		"private_key":    pemKey.String(),
		"client_email":   "regtest@regtest.iam.gserviceaccount.com",
		"client_id":      "1",
		"token_uri":      tokens.URL,
	}
}

// gcsOp names a GCS JSON API call.
func gcsOp(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/upload/"):
		return "Upload"
	case strings.Contains(p, "/copyTo/") || strings.Contains(p, "/rewriteTo/"):
		return "Copy"
	case r.Method == http.MethodGet && strings.HasSuffix(p, "/o"):
		return "List"
	case r.Method == http.MethodGet && r.URL.Query().Get("alt") == "media", r.Method == http.MethodGet && !strings.HasPrefix(p, "/storage/"):
		return "Download"
	case r.Method == http.MethodGet:
		return "GetMetadata"
	case r.Method == http.MethodDelete:
		return "Delete"
	}
	return r.Method + " " + p
}
