package downstream_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

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
