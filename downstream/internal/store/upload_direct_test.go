package store

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/ident"
)

// newFileStore is a store on a filesystem driver in a temporary
// directory, reading and writing its files directly when direct.
func newFileStore(t *testing.T, direct bool) (*Store, string) {
	t.Helper()
	root := t.TempDir()
	driver := filesystem.New(filesystem.DriverParameters{RootDirectory: root, MaxThreads: 10})
	ns, err := storage.NewRegistry(t.Context(), driver)
	if err != nil {
		t.Fatal(err)
	}
	s := New(ns, driver)
	if direct {
		s.SetFileRoot(root)
	}
	return s, root
}

func testRepo(t *testing.T, name string) ident.Repo {
	t.Helper()
	named, err := reference.WithName(name)
	if err != nil {
		t.Fatal(err)
	}
	return ident.Of(named)
}

// leftovers lists the files under root whose names say they are
// temporary, and the upload directories still there.
func leftovers(t *testing.T, root string) []string {
	t.Helper()
	var left []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".tmp") || filepath.Base(filepath.Dir(p)) == "_uploads" {
			left = append(left, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return left
}

// writeUpload starts an upload into repo, started at at, and writes body.
func writeUpload(t *testing.T, s *Store, repo ident.Repo, at time.Time, body []byte) *Upload {
	t.Helper()
	u, err := s.NewUpload(t.Context(), repo, at)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(body); err != nil {
		t.Fatal(err)
	}
	return u
}

// The upload written through the driver and the one written on its files
// directly end the same way, as distribution sees them: the blob stored,
// linked in the repository (and not in another), readable while written,
// and nothing left of the upload.
func TestUploadDirectAndThroughTheDriverAgree(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(map[bool]string{false: "driver", true: "direct"}[direct], func(t *testing.T) {
			ctx := t.Context()
			s, root := newFileStore(t, direct)
			repo := testRepo(t, "test/blob")
			body := bytes.Repeat([]byte("content-cache "), 10_000)
			dgst := digest.FromBytes(body)
			u := writeUpload(t, s, repo, time.Now(), body)
			rd, err := u.ReadWritten(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rd)
			rd.Close()
			// The driver's writer buffers up to 4 KiB until its commit.
			if err != nil || len(got) < len(body)-100-4096 || !bytes.Equal(got, body[100:100+len(got)]) {
				t.Fatalf("read %d bytes of the upload in progress from 100 (%v), want its bytes", len(got), err)
			}
			if err := u.Commit(ctx, repo, dgst, int64(len(body))); err != nil {
				t.Fatal(err)
			}
			r, err := s.ns.Repository(ctx, repo.Stored())
			if err != nil {
				t.Fatal(err)
			}
			desc, err := r.Blobs(ctx).Stat(ctx, dgst)
			if err != nil || desc.Size != int64(len(body)) {
				t.Fatalf("distribution's Stat in the repository: %+v, %v", desc, err)
			}
			b, err := r.Blobs(ctx).Get(ctx, dgst)
			if err != nil || !bytes.Equal(b, body) {
				t.Fatalf("distribution reads %d bytes (%v), want the %d written", len(b), err, len(body))
			}
			other, err := s.ns.Repository(ctx, testRepo(t, "test/other").Stored())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Blobs(ctx).Stat(ctx, dgst); err == nil {
				t.Fatal("linked in a repository it was not committed to")
			}
			if left := leftovers(t, root); len(left) > 0 {
				t.Fatalf("left behind: %v", left)
			}
		})
	}
}

// A commit whose size is not what storage holds keeps nothing, either way.
func TestUploadDirectWrongSizeKeepsNothing(t *testing.T) {
	for _, direct := range []bool{false, true} {
		ctx := t.Context()
		s, _ := newFileStore(t, direct)
		repo := testRepo(t, "test/blob")
		body := []byte("twelve bytes")
		dgst := digest.FromBytes(body)
		u := writeUpload(t, s, repo, time.Now(), body)
		err := u.Commit(ctx, repo, dgst, 13)
		if err == nil || !strings.Contains(err.Error(), "storage holds 12 of 13 bytes") {
			t.Fatalf("direct %v: commit of a wrong size: %v", direct, err)
		}
		u.Cancel(ctx)
		if _, err := s.Stat(ctx, dgst); err == nil {
			t.Fatalf("direct %v: the blob was kept", direct)
		}
	}
}

// A cancelled upload leaves nothing; one never committed nor cancelled (a
// crash) is found and removed by distribution's upload purger, which reads
// the startedat written directly.
func TestUploadDirectCancelAndPurge(t *testing.T) {
	ctx := t.Context()
	s, root := newFileStore(t, true)
	repo := testRepo(t, "test/blob")
	u := writeUpload(t, s, repo, time.Now(), []byte("partial"))
	u.Cancel(ctx)
	if left := leftovers(t, root); len(left) > 0 {
		t.Fatalf("a cancelled upload left: %v", left)
	}
	crashed := writeUpload(t, s, repo, time.Now().Add(-time.Hour), []byte("partial"))
	_ = crashed.file.Close()
	deleted, errs := storage.PurgeUploads(ctx, s.driver, time.Now().Add(-time.Minute), true)
	if len(errs) > 0 || len(deleted) == 0 {
		t.Fatalf("the purger deleted %v, errors %v", deleted, errs)
	}
	if left := leftovers(t, root); len(left) > 0 {
		t.Fatalf("the purger left: %v", left)
	}
}

// Stored already: the data stays as it is (the same file), the upload
// goes, and the link is written.
func TestUploadDirectStoredAlready(t *testing.T) {
	ctx := t.Context()
	s, root := newFileStore(t, true)
	body := []byte("stored already")
	dgst := digest.FromBytes(body)
	for i, name := range []string{"test/a", "test/b"} {
		repo := testRepo(t, name)
		u := writeUpload(t, s, repo, time.Now(), body)
		var before os.FileInfo
		if i == 1 {
			var err error
			if before, err = os.Stat(s.fullPath(BlobDataPath(dgst))); err != nil {
				t.Fatal(err)
			}
		}
		if err := u.Commit(ctx, repo, dgst, int64(len(body))); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			after, err := os.Stat(s.fullPath(BlobDataPath(dgst)))
			if err != nil || !os.SameFile(before, after) {
				t.Fatalf("the stored data was replaced (%v)", err)
			}
		}
		link, err := os.ReadFile(s.fullPath(LinkDir(name, dgst, KindLayer) + "/link"))
		if err != nil || string(link) != dgst.String() {
			t.Fatalf("%s's link: %q, %v", name, link, err)
		}
	}
	if left := leftovers(t, root); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// Link refuses a digest whose data is not stored (a not-found, no link
// written), and leaves a link that holds the digest as it is.
func TestLinkDirect(t *testing.T) {
	ctx := t.Context()
	s, _ := newFileStore(t, true)
	repo := testRepo(t, "test/blob")
	missing := digest.FromString("missing")
	if err := s.Link(ctx, repo, missing); !IsNotFound(err) {
		t.Fatalf("link of missing data: %v, want a not-found", err)
	}
	if _, err := os.Stat(s.fullPath(LinkDir("test/blob", missing, KindLayer))); !os.IsNotExist(err) {
		t.Fatalf("a link was written for missing data (%v)", err)
	}
	r, err := s.ns.Repository(ctx, testRepo(t, "test/src").Stored())
	if err != nil {
		t.Fatal(err)
	}
	desc, err := r.Blobs(ctx).Put(ctx, "application/octet-stream", []byte("linked"))
	if err != nil {
		t.Fatal(err)
	}
	link := s.fullPath(LinkDir("test/blob", desc.Digest, KindLayer) + "/link")
	for range 2 {
		if err := s.Link(ctx, repo, desc.Digest); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(link)
		if err != nil || string(b) != desc.Digest.String() {
			t.Fatalf("link: %q, %v", b, err)
		}
	}
}
