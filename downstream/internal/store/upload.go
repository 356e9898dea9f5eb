package store

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
)

// Upload writes a blob through the storage driver into an upload directory
// of a repository, and moves it into distribution's blob store once the
// caller verified it: distribution's BlobWriter would hash every byte a
// second time. A crash leaves the directory to distribution's upload
// purger, which reads its startedat file.
type Upload struct {
	s         *Store
	dir       string                   // <repository>/_uploads/<uuid>
	fw        storagedriver.FileWriter // through the driver
	file      *os.File                 // or on the driver's files (upload_direct.go)
	committed bool
}

// direct reports whether the upload is written on the filesystem driver's
// files rather than through the driver (upload_direct.go).
func (u *Upload) direct() bool { return u.s.fileRoot != "" }

// NewUpload starts an upload into repo, started at now.
func (s *Store) NewUpload(ctx context.Context, repo ident.Repo, now time.Time) (*Upload, error) {
	u := &Upload{s: s, dir: UploadDir(repo.Stored().Name(), uuid.NewString())}
	if s.fileRoot != "" {
		return u, s.newUploadDirect(u, now)
	}
	if err := s.driver.PutContent(ctx, path.Join(u.dir, "startedat"), []byte(now.UTC().Format(time.RFC3339))); err != nil {
		return u, err
	}
	fw, err := s.driver.Writer(ctx, path.Join(u.dir, "data"), false)
	if err != nil {
		return u, err
	}
	u.fw = fw
	return u, nil
}

// Write appends to the upload. On the filesystem it writes at most
// fileWrite bytes per call: Linux sizes a page-cache folio after the write
// that creates it, and a folio above 32 KiB is a costly allocation that,
// once memory is fragmented (a cache host's normal state), stalls in the
// page allocator (`dd` of 1 GiB: up to 4 s of system time in 256 KiB
// writes, 0.25 s in 32 KiB ones). With 256 KiB writes the bench measured 3.4 times the CPU per
// byte of distribution's proxy (which writes 32 KiB at a time) in such a
// state, and the same CPU otherwise.
func (u *Upload) Write(p []byte) (int, error) {
	var w io.Writer = u.fw
	if u.direct() {
		w = u.file
	} else if u.s.driver.Name() != "filesystem" {
		return u.fw.Write(p)
	}
	var n int
	for len(p) > 0 {
		k, err := w.Write(p[:min(len(p), fileWrite)])
		n += k
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// fileWrite is the largest write to a file: 32 KiB, the largest folio
// the kernel does not count as a costly allocation (order 3).
const fileWrite = 32 << 10

// Commit keeps the upload as dgst, which the caller verified was size
// bytes, and links it into repo (the repository the origin confirmed). The
// size is checked only after the writer's Commit, against what the storage
// reports: object stores' writers (s3, azure, gcs) buffer and upload in
// parts, so before Commit neither Size nor Stat counts the last part.
func (u *Upload) Commit(ctx context.Context, repo ident.Repo, dgst digest.Digest, size int64) error {
	if u.direct() {
		return u.commitDirect(repo, dgst, size)
	}
	if err := u.fw.Commit(ctx); err != nil {
		return err
	}
	u.committed = true
	if err := u.fw.Close(); err != nil {
		return err
	}
	upload := path.Join(u.dir, "data")
	fi, err := u.s.driver.Stat(ctx, upload)
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("storage holds %d of %d bytes", fi.Size(), size)
	}
	// Stored already? A read at the blob's end costs one request and no
	// listing on every driver; a Stat of a missing object lists on object
	// stores (s3: HEAD then LIST).
	data := BlobDataPath(dgst)
	switch rd, err := u.s.driver.Reader(ctx, data, size); {
	case err == nil:
		_ = rd.Close()
	case IsNotFound(err):
		if err := u.s.driver.Move(ctx, upload, data); err != nil {
			return err
		}
	default:
		// Unknown whether it is stored: nothing is linked to what may
		// not be there.
		return err
	}
	// Stored already (another cache sharing the storage): the upload goes.
	_ = u.s.driver.Delete(ctx, u.dir)
	return u.s.Link(ctx, repo, dgst)
}

// Cancel drops what is left of the upload: its writer unless committed,
// and its directory.
func (u *Upload) Cancel(ctx context.Context) {
	if u.direct() {
		u.cancelDirect()
		return
	}
	if u.fw != nil && !u.committed {
		_ = u.fw.Cancel(ctx)
		_ = u.fw.Close()
	}
	_ = u.s.driver.Delete(ctx, u.dir)
}

// PartSize is how many bytes the driver's writer gathers before it uploads
// them as one part, inside a Write that blocks meanwhile: distribution's
// defaults for s3 (chunksize 10 MiB), gcs (16 MiB) and azure (4 MiB
// blocks); 0 for the filesystem and in memory. A writer configured with a
// larger chunksize still works, with less of its upload overlapping the
// download.
func (s *Store) PartSize() int64 {
	switch s.driver.Name() {
	case "s3aws":
		return 10 << 20
	case "gcs":
		return 16 << 20
	case "azure":
		return 4 << 20
	}
	return 0
}

// Readable reports whether an upload's bytes can be read back while it is
// being written: on the filesystem driver they are in a plain file (all
// but the writer's small buffer); object stores show nothing before the
// commit.
func (s *Store) Readable() bool { return s.driver.Name() == "filesystem" }

// ReadWritten reads the upload in progress from offset, on a driver that
// is Readable. A reader opened before the commit moves the file keeps
// reading it.
func (u *Upload) ReadWritten(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if u.direct() {
		return u.readWrittenDirect(offset)
	}
	return u.s.driver.Reader(ctx, path.Join(u.dir, "data"), offset)
}
