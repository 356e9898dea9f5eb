package store

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/reference"

	"github.com/content-cache/content-cache/downstream/internal/ident"
)

// sizesDriver is the filesystem driver recording the size of every write
// to an upload.
type sizesDriver struct {
	storagedriver.StorageDriver
	sizes *[]int
}

func (d sizesDriver) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	w, err := d.StorageDriver.Writer(ctx, path, append)
	return sizesWriter{w, d.sizes}, err
}

type sizesWriter struct {
	storagedriver.FileWriter
	sizes *[]int
}

func (w sizesWriter) Write(p []byte) (int, error) {
	*w.sizes = append(*w.sizes, len(p))
	return w.FileWriter.Write(p)
}

// An upload on the filesystem reaches the file in writes of at most 32 KiB
// (larger ones make the kernel allocate large page-cache folios, which
// stall in compaction once memory is fragmented), and keeps every byte.
func TestUploadWritesFilesInSmallPieces(t *testing.T) {
	ctx := t.Context()
	fs, err := filesystem.FromParameters(map[string]any{"rootdirectory": t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	d := sizesDriver{fs, &sizes}
	s := New(nil, d)
	named, err := reference.WithName("test/blob")
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.NewUpload(ctx, ident.Of(named), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Cancel(ctx)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 256<<10/16+100) // 256 KiB and a bit
	if n, err := u.Write(chunk); err != nil || n != len(chunk) {
		t.Fatalf("wrote %d of %d bytes: %v", n, len(chunk), err)
	}
	for _, n := range sizes {
		if n > 32<<10 {
			t.Fatalf("a write of %d bytes reached the file (all: %v)", n, sizes)
		}
	}
	if err := u.fw.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	u.committed = true
	rd, err := u.ReadWritten(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got, err := io.ReadAll(rd)
	if err != nil || !bytes.Equal(got, chunk) {
		t.Fatalf("the upload holds %d bytes, not the %d written (%v)", len(got), len(chunk), err)
	}
}
