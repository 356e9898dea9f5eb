package origin

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
	"github.com/sirupsen/logrus"
)

// originCounts counts what an origin served: every request, and the blob
// GETs it answered with bytes, with or without a signature, and whether
// they carried an Authorization header.
type originCounts struct {
	mu sync.Mutex
	t  originTotals
	// uris are the request URIs received on routes other than blobs, as
	// they came (before the middleware redacts anything).
	uris []string
}

// originTotals are the counts at one moment.
type originTotals struct {
	requests       int // but the key endpoint's
	blobGETs       int // answered 200
	blobBytes      int64
	signedGETs     int // answered 200, signed
	signedWithCred int // signed requests that carried Authorization
}

// countingWriter counts as the response is written, not after the handler
// returned: a client may read the whole answer before that.
type countingWriter struct {
	http.ResponseWriter
	c      *originCounts
	blob   bool // a blob GET
	signed bool
	status int
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		if w.blob && code == http.StatusOK {
			w.c.mu.Lock()
			w.c.t.blobGETs++
			if w.signed {
				w.c.t.signedGETs++
			}
			w.c.mu.Unlock()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.blob && w.status == http.StatusOK {
		w.c.mu.Lock()
		w.c.t.blobBytes += int64(len(p))
		w.c.mu.Unlock()
	}
	return w.ResponseWriter.Write(p)
}

func (c *originCounts) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		signed := r.URL.Query().Get("cc-sig") != ""
		c.mu.Lock()
		if r.URL.Path != keysPath {
			c.t.requests++
		}
		if signed && r.Header.Get("Authorization") != "" {
			c.t.signedWithCred++
		}
		if !strings.Contains(r.URL.Path, "/blobs/") {
			c.uris = append(c.uris, r.RequestURI)
		}
		c.mu.Unlock()
		blob := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/")
		h.ServeHTTP(&countingWriter{ResponseWriter: w, c: c, blob: blob, signed: signed}, r)
	})
}

// nonBlobURIs returns the request URIs received on routes other than blobs.
func (c *originCounts) nonBlobURIs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.uris...)
}

// snapshot returns the counts now.
func (c *originCounts) snapshot() originTotals {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// signingCache starts a content cache of upstream named name at the
// origin, taking the origin's keys from its key endpoint, on clock, its
// log captured in the returned buffer.
func signingCache(t *testing.T, upstream, keysURL, name string, downstreams []string, clock *regtest.Clock) (*regtest.Server, *regtest.Buffer) {
	t.Helper()
	logs := &regtest.Buffer{}
	l := logrus.New()
	l.SetOutput(logs)
	l.SetLevel(logrus.DebugLevel)
	signing := map[string]any{"name": name, "keysurl": keysURL}
	if len(downstreams) > 0 {
		ds := make([]any, len(downstreams))
		for i, d := range downstreams {
			ds[i] = d
		}
		signing["downstreams"] = ds
	}
	extra := map[string]any{"signing": signing}
	downstream.SetOptions(extra, downstream.Options{Now: clock.Now, Logger: logrus.NewEntry(l)})
	return regtest.StartCache(t, upstream, extra), logs
}
