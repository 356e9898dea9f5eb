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
	mu             sync.Mutex
	requests       int
	blobGETs       int // answered 200
	blobBytes      int64
	signedGETs     int // answered 200, signed
	signedWithCred int // signed requests that carried Authorization
}

type countingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *countingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (c *originCounts) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		signed := r.URL.Query().Get("cc-sig") != ""
		c.mu.Lock()
		defer c.mu.Unlock()
		c.requests++
		if signed && r.Header.Get("Authorization") != "" {
			c.signedWithCred++
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && cw.status == http.StatusOK {
			c.blobGETs++
			c.blobBytes += cw.bytes
			if signed {
				c.signedGETs++
			}
		}
	})
}

// snapshot returns a copy of the counts.
func (c *originCounts) snapshot() originCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return originCounts{requests: c.requests, blobGETs: c.blobGETs, blobBytes: c.blobBytes, signedGETs: c.signedGETs, signedWithCred: c.signedWithCred}
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
