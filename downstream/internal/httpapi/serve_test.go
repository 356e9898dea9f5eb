package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/reference"
	"github.com/sirupsen/logrus"
)

// failingReads is a storage whose blob data cannot be read.
type failingReads struct{ storagedriver.StorageDriver }

func (failingReads) Reader(context.Context, string, int64) (io.ReadCloser, error) {
	return nil, errors.New("disk on fire")
}

// A stored blob that storage cannot read is not served (no 500, no hit, no
// pull recorded): the caller fetches it instead.
func TestServeLocalStorageFailureIsNotAHit(t *testing.T) {
	ctx := t.Context()
	driver := inmemory.New()
	ns, err := storage.NewRegistry(ctx, driver)
	if err != nil {
		t.Fatal(err)
	}
	named, _ := reference.WithName("a")
	repo, err := ns.Repository(ctx, named)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := repo.Blobs(ctx).Put(ctx, "application/octet-stream", []byte("stored, but unreadable"))
	if err != nil {
		t.Fatal(err)
	}
	dgst := desc.Digest
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	c := New(Deps{Store: store.New(ns, failingReads{driver}), Log: logrus.NewEntry(quiet), Now: time.Now})
	rec := httptest.NewRecorder()
	sw := &statusWriter{ResponseWriter: rec}
	req := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+dgst.String(), nil)
	if c.serveLocal(sw, req, repo.Blobs(ctx), dgst) {
		t.Fatalf("serveLocal reported a hit after a storage failure (wrote %d %q)", rec.Code, rec.Body)
	}
	if sw.status != 0 || rec.Body.Len() != 0 || strings.Contains(rec.Header().Get("Content-Type"), "json") {
		t.Fatalf("serveLocal wrote %d %q before falling back to a fetch", sw.status, rec.Body)
	}
}
