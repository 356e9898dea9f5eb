package store

import (
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// SmallMax is the largest blob whose data SmallData keeps: 32 KiB, below
// which a hit's body is copied anyway (above it, sendfile from a file of
// the request's own).
const SmallMax = 32 << 10

// openFilesMax bounds the small blobs kept (at most 16 MiB of data); past
// it, one goes for each one kept.
const openFilesMax = 512

// openFiles keeps the filesystem driver's data files of small blobs open
// between hits, with their bytes: opening, registering with the poller,
// reading and closing a file took a sixth of a small hit's CPU (`bench
// -only warm-load -cpuprofile`, 8 × 4 KiB, 64 clients). A kept blob is
// served only while its file still has a name (fstat's link count on the
// open file, on every hit): data removed by this cache (RemoveData forgets
// it at once) or by any other process sharing the storage is never served
// from memory; the file is opened again from its path.
type openFiles struct {
	mu sync.Mutex
	m  map[digest.Digest]*openFile
}

// openFile is a data file kept open and its bytes (never modified).
type openFile struct {
	f    *os.File
	data []byte
}

// get returns the kept data file of dgst, opening and reading its data
// file under root when there is none.
func (o *openFiles) get(dgst digest.Digest, root string, size int64) (*openFile, error) {
	o.mu.Lock()
	of := o.m[dgst]
	o.mu.Unlock()
	if of != nil {
		return of, nil
	}
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(BlobDataPath(dgst))))
	if err != nil {
		return nil, err
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		f.Close()
		return nil, err
	}
	of = &openFile{f: f, data: data}
	o.mu.Lock()
	defer o.mu.Unlock()
	if kept := o.m[dgst]; kept != nil {
		f.Close() // another request opened it meanwhile
		return kept, nil
	}
	if o.m == nil {
		o.m = make(map[digest.Digest]*openFile)
	}
	if len(o.m) >= openFilesMax {
		for k, old := range o.m {
			// A check in progress on it fails with os.ErrClosed, never
			// on a reused descriptor.
			old.f.Close()
			delete(o.m, k)
			break
		}
	}
	o.m[dgst] = of
	return of, nil
}

// forget closes and drops dgst's file (only of, when of is not nil:
// another request may have opened a fresh one since).
func (o *openFiles) forget(dgst digest.Digest, of *openFile) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if kept := o.m[dgst]; kept != nil && (of == nil || kept == of) {
		kept.f.Close()
		delete(o.m, dgst)
	}
}

// SmallData is the whole data of a blob described by desc, at most
// SmallMax bytes, kept with its data file open (see openFiles): the caller
// must not modify it. false when it cannot: not the filesystem driver read
// directly, too large, the data gone or of another size, or any error.
func (s *Store) SmallData(desc v1.Descriptor) ([]byte, bool) {
	if s.fileRoot == "" || desc.Size < 0 || desc.Size > SmallMax {
		return nil, false
	}
	for range 2 { // a second time after a kept file turned out stale
		of, err := s.files.get(desc.Digest, s.fileRoot, desc.Size)
		if err != nil {
			return nil, false
		}
		fi, err := of.f.Stat()
		if err != nil {
			s.files.forget(desc.Digest, of)
			return nil, false
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Nlink == 0 {
			// Removed (or replaced) since it was opened.
			s.files.forget(desc.Digest, of)
			continue
		}
		if fi.Size() != desc.Size || int64(len(of.data)) != desc.Size {
			return nil, false
		}
		return of.data, true
	}
	return nil, false
}

// Linked is the descriptor of dgst linked in the repository stored as
// repo, when the link memo holds one read within linkMemoFor (see
// linkmemo.go); false otherwise, when the caller reads it through
// distribution (Repository's Blobs().Stat), which refreshes the memo.
func (s *Store) Linked(repo string, dgst digest.Digest) (v1.Descriptor, bool) {
	return s.links.get(linkKey{repo, dgst}, s.clock())
}
