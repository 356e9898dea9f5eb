package downstream

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// failingReads is a storage whose blob data cannot be read.
type failingReads struct{ storagedriver.StorageDriver }

func (failingReads) Reader(context.Context, string, int64) (io.ReadCloser, error) {
	return nil, errors.New("disk on fire")
}

// A stored blob that storage cannot read is not served (no 500, no hit, no
// pull recorded): the caller fetches it instead.
func TestServeLocalStorageFailureIsNotAHit(t *testing.T) {
	f := newSweepFixture(t, 0)
	dgst := f.put("a", []byte("stored, but unreadable"))
	c, err := New(testConfig(t, 0), f.ns, Options{Driver: failingReads{f.driver}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	rec := httptest.NewRecorder()
	sw := &statusWriter{ResponseWriter: rec}
	req := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+dgst.String(), nil)
	if c.serveLocal(sw, req, f.repo("a").Blobs(f.ctx), dgst) {
		t.Fatalf("serveLocal reported a hit after a storage failure (wrote %d %q)", rec.Code, rec.Body)
	}
	if sw.status != 0 || rec.Body.Len() != 0 || strings.Contains(rec.Header().Get("Content-Type"), "json") {
		t.Fatalf("serveLocal wrote %d %q before falling back to a fetch", sw.status, rec.Body)
	}
}
