package store

import (
	"io"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// With the file root set, Reader opens the filesystem driver's blob files
// itself: the same bytes from any offset, and a missing blob is the
// driver's not-found.
func TestReaderDirect(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
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
	desc, err := repo.Blobs(ctx).Put(ctx, "application/octet-stream", []byte("hello, world"))
	if err != nil {
		t.Fatal(err)
	}
	s := New(ns, driver)
	s.SetFileRoot(root)
	for _, off := range []int64{0, 7} {
		r, err := s.Reader(ctx, desc.Digest, off)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(b) != "hello, world"[off:] {
			t.Fatalf("offset %d: %q, %v", off, b, err)
		}
	}
	if _, err := s.Reader(ctx, digest.FromString("missing"), 0); !IsNotFound(err) {
		t.Fatalf("missing blob: %v, want a not-found", err)
	}
}
