// Package store is the only code that knows distribution's storage layout:
// it stats, reads, links, uploads, unlinks and walks the content the cache
// keeps, through distribution's API where that is enough and through the
// storage driver where distribution's would cost more or cannot reach.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Store is the cache's storage: distribution's namespace built over the
// driver, and the driver.
type Store struct {
	ns     distribution.Namespace
	driver storagedriver.StorageDriver
	links  linkMemo         // links read lately (linkmemo.go)
	files  openFiles        // data files of small hits kept open (openfiles.go)
	now    func() time.Time // the memo's clock; nil: time.Now
	// fileRoot: the filesystem driver's root, read directly (direct.go).
	fileRoot string
}

// New is the store over ns, built by distribution over driver.
func New(ns distribution.Namespace, driver storagedriver.StorageDriver) *Store {
	return &Store{ns: ns, driver: driver}
}

// Driver is the storage driver, for the cache's own records beside
// distribution's tree.
func (s *Store) Driver() storagedriver.StorageDriver { return s.driver }

// Repository is distribution's view of one repository.
func (s *Store) Repository(ctx context.Context, repo ident.Repo) (distribution.Repository, error) {
	r, err := s.ns.Repository(ctx, repo.Stored())
	if err != nil {
		return nil, err
	}
	return memoRepository{Repository: r, s: s}, nil
}

// Stat describes a blob's data, whatever repository links it.
func (s *Store) Stat(ctx context.Context, dgst digest.Digest) (v1.Descriptor, error) {
	return s.ns.BlobStatter().Stat(ctx, dgst)
}

// Reader reads a blob's data from offset.
func (s *Store) Reader(ctx context.Context, dgst digest.Digest, offset int64) (io.ReadCloser, error) {
	if s.fileRoot != "" {
		return s.readerDirect(ctx, dgst, offset)
	}
	return s.driver.Reader(ctx, BlobDataPath(dgst), offset)
}

// RedirectURL is where the driver would send a client for a blob's data
// ("" when it serves it itself).
func (s *Store) RedirectURL(r *http.Request, dgst digest.Digest) (string, error) {
	return s.driver.RedirectURL(r, BlobDataPath(dgst))
}

// mountStat links an existing blob into a repository without copying it:
// the caller has checked that the origin has the blob in that repository.
type mountStat struct {
	from reference.Canonical
	desc v1.Descriptor
}

func (m mountStat) Apply(v any) error {
	opts, ok := v.(*distribution.CreateOptions)
	if !ok {
		return fmt.Errorf("unexpected options type %T", v)
	}
	opts.Mount.ShouldMount = true
	opts.Mount.From = m.from
	opts.Mount.Stat = &m.desc
	return nil
}

// Link makes a blob whose data is stored part of repo. Only for a
// repository the origin confirmed has the blob. Through distribution's
// blob store, or on the filesystem driver's files directly
// (upload_direct.go).
func (s *Store) Link(ctx context.Context, repo ident.Repo, dgst digest.Digest) error {
	if s.fileRoot != "" {
		return s.linkDirect(repo, dgst)
	}
	desc, err := s.Stat(ctx, dgst)
	if err != nil {
		return err
	}
	from, err := reference.WithDigest(repo.Stored(), dgst)
	if err != nil {
		return err
	}
	r, err := s.ns.Repository(ctx, repo.Stored())
	if err != nil {
		return err
	}
	bw, err := r.Blobs(ctx).Create(ctx, mountStat{from: from, desc: desc})
	var mounted distribution.ErrBlobMounted
	if errors.As(err, &mounted) {
		return nil
	}
	if err == nil {
		_ = bw.Cancel(ctx)
		return fmt.Errorf("linking %s into %s: mount was not done", dgst, repo)
	}
	return err
}

// Unlink removes one repository's link to a digest, through distribution
// (which also clears its descriptor cache), or straight from the driver
// when distribution cannot see it (a link whose data is already gone).
func (s *Store) Unlink(ctx context.Context, ref Ref) error {
	// Forgotten before and after: a hit between the two reads it again.
	s.links.forget(linkKey{ref.Repo, ref.Digest})
	defer s.links.forget(linkKey{ref.Repo, ref.Digest})
	named, err := reference.WithName(ref.Repo)
	if err != nil {
		return err
	}
	repo, err := s.ns.Repository(ctx, named)
	if err != nil {
		return err
	}
	if ref.Kind == KindManifest {
		var ms distribution.ManifestService
		if ms, err = repo.Manifests(ctx); err == nil {
			err = ms.Delete(ctx, ref.Digest)
		}
	} else {
		err = repo.Blobs(ctx).Delete(ctx, ref.Digest)
	}
	if err == nil || !errors.Is(err, distribution.ErrBlobUnknown) {
		return err
	}
	if err := s.driver.Delete(ctx, LinkDir(ref.Repo, ref.Digest, ref.Kind)); err != nil && !IsNotFound(err) {
		return err
	}
	return nil
}

// RemoveData deletes a blob's data (gone already is fine).
func (s *Store) RemoveData(ctx context.Context, dgst digest.Digest) error {
	// Closed before and after: a hit between the two opens it again (and
	// finds it gone once removed).
	s.files.forget(dgst, nil)
	defer s.files.forget(dgst, nil)
	if err := storage.NewVacuum(ctx, s.driver).RemoveBlob(dgst.String()); err != nil && !IsNotFound(err) {
		return err
	}
	return nil
}

// WalkLinks calls fn for every layer and manifest revision link in storage.
// It walks distribution's tree itself: distribution's repository
// enumeration skips repositories without manifests, which a cache has
// whenever clients fetch blobs alone.
func (s *Store) WalkLinks(ctx context.Context, fn func(Ref) error) error {
	err := s.driver.Walk(ctx, RepositoriesRoot, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			base, parent := path.Base(fi.Path()), path.Base(path.Dir(fi.Path()))
			if base == "_uploads" || (base == "tags" && parent == "_manifests") {
				return storagedriver.ErrSkipDir
			}
			return nil
		}
		if ref, ok := ParseLinkPath(fi.Path()); ok {
			return fn(ref)
		}
		return nil
	})
	if IsNotFound(err) {
		return nil
	}
	return err
}

// EnumerateData calls fn for every blob's data in storage.
func (s *Store) EnumerateData(ctx context.Context, fn func(digest.Digest) error) error {
	err := s.ns.Blobs().Enumerate(ctx, fn)
	if IsNotFound(err) {
		return nil
	}
	return err
}
