package downstream_test

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/internal/regtest"
)

func captureLogs(t *testing.T) *regtest.Buffer {
	std := logrus.StandardLogger()
	out, level, formatter := std.Out, std.GetLevel(), std.Formatter
	buf := &regtest.Buffer{}
	logrus.SetOutput(buf)
	logrus.SetLevel(logrus.DebugLevel)
	logrus.SetFormatter(&logrus.JSONFormatter{
		TimestampFormat: time.RFC3339Nano,
		FieldMap:        logrus.FieldMap{logrus.FieldKeyFunc: "function"},
	})
	t.Cleanup(func() {
		logrus.SetOutput(out)
		logrus.SetLevel(level)
		logrus.SetFormatter(formatter)
	})
	return buf
}

// Neither a password, nor a Basic header, nor a bearer token reaches the log,
// at debug level, whatever the request's fate; and every line is one JSON
// object with the request's fields.
func TestLogsHoldNoCredentials(t *testing.T) {
	fake, srv := newFakeUpstream(t, "ok", 64<<10)
	cache := regtest.StartCache(t, srv.URL, nil)
	logs := captureLogs(t)

	const password = "pw-7f3a9c-never-logged"
	const token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLW5ldmVyLWxvZ2dlZA"
	basicHdr := basic("alice", password)
	secrets := []string{password, basicHdr, strings.TrimPrefix(basicHdr, "Basic "), token, "c2lnbmF0dXJlLW5ldmVyLWxvZ2dlZA",
		base64.RawStdEncoding.EncodeToString([]byte("alice:" + password))}

	blob := "/v2/test/blob/blobs/" + fake.dgst.String()
	private := "/v2/private/x/blobs/" + fake.dgst.String()
	for _, authorization := range []string{basicHdr, "Bearer " + token} {
		for _, tc := range []struct {
			method, path string
			status       int
		}{
			{http.MethodGet, "/v2/", http.StatusOK},                                 // forwarded
			{http.MethodGet, blob, http.StatusOK},                                   // a miss, then a hit
			{http.MethodGet, private, http.StatusUnauthorized},                      // denied, logged at debug
			{http.MethodHead, private, http.StatusUnauthorized},                     // denied
			{http.MethodGet, "/v2/test/blob/manifests/latest", http.StatusNotFound}, // an error, logged at debug
			{http.MethodGet, "/v2/test/blob/tags/list", http.StatusNotFound},        // forwarded refusal
			{http.MethodPut, "/v2/test/blob/manifests/v1", http.StatusMethodNotAllowed},
		} {
			if status, _, _ := rawGet(t, cache.URL, tc.method, tc.path, authorization); status != tc.status {
				t.Fatalf("%s %s: %d, want %d", tc.method, tc.path, status, tc.status)
			}
		}
	}
	idle(t, cache)

	out := logs.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("the log holds the credential %q", s)
		}
	}
	var requests, debug int
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("not one JSON object: %q: %v", line, err)
			continue
		}
		if entry["level"] == "debug" {
			debug++
		}
		if entry["msg"] != "request" {
			continue
		}
		requests++
		for _, field := range []string{"time", "component", "method", "kind", "result", "status", "bytes", "duration"} {
			if _, ok := entry[field]; !ok {
				t.Errorf("request line without %q: %s", field, line)
			}
		}
	}
	// Every request but the refused writes has its line.
	if requests != 12 {
		t.Errorf("%d request lines, want 12:\n%s", requests, out)
	}
	if debug == 0 {
		t.Errorf("no debug line: the test does not check the debug level\n%s", out)
	}
	if t.Failed() {
		t.Logf("log:\n%s", out)
	}
}
