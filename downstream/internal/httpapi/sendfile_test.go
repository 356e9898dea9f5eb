package httpapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// readFromRecorder is a ResponseWriter with a ReadFrom (as net/http's
// is), recording what ReadFrom was handed.
type readFromRecorder struct {
	*httptest.ResponseRecorder
	froms []io.Reader
}

func (w *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	w.froms = append(w.froms, src)
	return io.Copy(w.ResponseRecorder, src)
}

// fsBlob stores data in a filesystem driver and returns an API over it
// and the repository's blobs.
func fsBlob(t *testing.T, data []byte) (*API, distribution.BlobStore, digest.Digest) {
	t.Helper()
	return fsBlobIn(t, t.TempDir(), data)
}

// fsBlobIn is fsBlob with the driver's root directory given.
func fsBlobIn(t *testing.T, root string, data []byte) (*API, distribution.BlobStore, digest.Digest) {
	t.Helper()
	ctx := t.Context()
	driver := filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 10})
	ns, err := storage.NewRegistry(ctx, driver)
	if err != nil {
		t.Fatal(err)
	}
	named, _ := reference.WithName("a")
	repo, err := ns.Repository(ctx, named)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := repo.Blobs(ctx).Put(ctx, "application/octet-stream", data)
	if err != nil {
		t.Fatal(err)
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	return New(Deps{Store: store.New(ns, driver), Log: logrus.NewEntry(quiet), Now: time.Now}), repo.Blobs(ctx), desc.Digest
}

// A hit on the filesystem driver goes to the writer's ReadFrom with the
// stored file (what net/http hands to sendfile), full and ranged, for a
// client on another host and on loopback alike; the request log's status
// and bytes stay right. Over TLS, and under minSendfile, the bytes are
// copied through Write.
func TestServeLocalFileGoesToReadFrom(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	c, blobs, dgst := fsBlob(t, data)
	remote := context.WithValue(t.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 5000})
	loopback := context.WithValue(t.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000})
	for _, tc := range []struct {
		name       string
		ctx        context.Context
		tls        bool
		rng        string
		status     int
		body       []byte
		toReadFrom bool
	}{
		{"full, remote client", remote, false, "", http.StatusOK, data, true},
		{"ranged, remote client", remote, false, "bytes=100-40059", http.StatusPartialContent, data[100:40060], true},
		{"small range, remote client", remote, false, "bytes=100-4195", http.StatusPartialContent, data[100:4196], false},
		{"open range, remote client", remote, false, "bytes=20000-", http.StatusPartialContent, data[20000:], true},
		{"full, loopback client", loopback, false, "", http.StatusOK, data, true},
		{"full, TLS", remote, true, "", http.StatusOK, data, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
			sw := &statusWriter{ResponseWriter: rec}
			req := httptest.NewRequestWithContext(tc.ctx, http.MethodGet, "/v2/a/blobs/"+dgst.String(), nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			if !c.serveLocal(sw, req, blobs, dgst) {
				t.Fatal("not served")
			}
			if rec.Code != tc.status || !bytes.Equal(rec.Body.Bytes(), tc.body) {
				t.Fatalf("got %d and %d bytes, want %d and %d bytes", rec.Code, rec.Body.Len(), tc.status, len(tc.body))
			}
			if sw.status != tc.status || sw.bytes != int64(len(tc.body)) {
				t.Errorf("request log: status %d, %d bytes; want %d, %d", sw.status, sw.bytes, tc.status, len(tc.body))
			}
			if !tc.toReadFrom {
				if len(rec.froms) != 0 {
					t.Errorf("ReadFrom called with %T; want a buffered copy", rec.froms[0])
				}
				return
			}
			if len(rec.froms) != 1 {
				t.Fatalf("ReadFrom called %d times, want once", len(rec.froms))
			}
			lr, ok := rec.froms[0].(*io.LimitedReader)
			if !ok {
				t.Fatalf("ReadFrom got %T, want an *io.LimitedReader over the file", rec.froms[0])
			}
			if _, ok := lr.R.(*os.File); !ok {
				t.Errorf("ReadFrom got a limit over %T, want *os.File (sendfile)", lr.R)
			}
		})
	}
}

// statusWriter's ReadFrom counts what the writer below took, and its
// implicit 200, as Write does; below a writer without ReadFrom it copies
// through Write.
func TestStatusWriterReadFrom(t *testing.T) {
	rf := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
	sw := &statusWriter{ResponseWriter: rf}
	if n, err := sw.ReadFrom(bytes.NewReader(make([]byte, 1000))); n != 1000 || err != nil {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if sw.status != http.StatusOK || sw.bytes != 1000 || len(rf.froms) != 1 || !sw.readsFrom() {
		t.Errorf("status %d, %d bytes, %d ReadFroms below; want 200, 1000, 1", sw.status, sw.bytes, len(rf.froms))
	}
	plain := httptest.NewRecorder() // no ReadFrom
	sw = &statusWriter{ResponseWriter: plain}
	sw.WriteHeader(http.StatusPartialContent)
	if n, err := sw.ReadFrom(bytes.NewReader(make([]byte, 10))); n != 10 || err != nil {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if sw.status != http.StatusPartialContent || sw.bytes != 10 || plain.Body.Len() != 10 || sw.readsFrom() {
		t.Errorf("status %d, %d bytes, body %d; want 206, 10, 10", sw.status, sw.bytes, plain.Body.Len())
	}
}
