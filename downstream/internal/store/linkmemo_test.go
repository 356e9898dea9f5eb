package store

import (
	"errors"
	"testing"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/reference"

	"github.com/content-cache/content-cache/downstream/internal/ident"
)

// A link read is believed for linkMemoFor: removed behind the store's back
// (another replica), it is seen gone once that passed; removed through
// Unlink, at once.
func TestLinkMemo(t *testing.T) {
	ctx := t.Context()
	driver := inmemory.New()
	ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	s := New(ns, driver)
	s.now = func() time.Time { return now }
	named, _ := reference.WithName("a/b")
	repo := ident.Of(named)
	r, err := s.Repository(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := r.Blobs(ctx).Put(ctx, "application/octet-stream", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	stat := func() error {
		r, err := s.Repository(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Blobs(ctx).Stat(ctx, desc.Digest)
		return err
	}
	if err := stat(); err != nil {
		t.Fatalf("linked blob: %v", err)
	}
	// Another replica removes the link.
	if err := driver.Delete(ctx, LinkDir("a/b", desc.Digest, KindLayer)); err != nil {
		t.Fatal(err)
	}
	if err := stat(); err != nil {
		t.Fatalf("within linkMemoFor: %v, want the memo's answer", err)
	}
	now = now.Add(linkMemoFor)
	if err := stat(); !errors.Is(err, distribution.ErrBlobUnknown) {
		t.Fatalf("after linkMemoFor: %v, want ErrBlobUnknown", err)
	}

	// Linked again and read; then unlinked by this store: gone at once.
	if err := s.Link(ctx, repo, desc.Digest); err != nil {
		t.Fatal(err)
	}
	if err := stat(); err != nil {
		t.Fatalf("linked again: %v", err)
	}
	if err := s.Unlink(ctx, Ref{Digest: desc.Digest, Repo: "a/b", Kind: KindLayer}); err != nil {
		t.Fatal(err)
	}
	if err := stat(); !errors.Is(err, distribution.ErrBlobUnknown) {
		t.Fatalf("after Unlink: %v, want ErrBlobUnknown", err)
	}
}
