package store

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// openFilesMax bounds the data files kept open for small hits; past it,
// one is closed for each opened.
const openFilesMax = 1024

// openFiles keeps the filesystem driver's data files of small blobs open
// between hits: opening, registering with the poller and closing a file
// took a sixth of a small hit's CPU (`bench -only warm-load -cpuprofile`,
// 8 × 4 KiB, 64 clients). A file kept open is used only while it still
// has a name (fstat's link count): data removed by this cache (RemoveData
// forgets it at once) or by any other process sharing the storage is never
// served from it; the file is opened again from its path.
type openFiles struct {
	mu sync.Mutex
	m  map[digest.Digest]*os.File
}

// get returns the open file of dgst, opening path when there is none.
func (o *openFiles) get(dgst digest.Digest, path string) (*os.File, error) {
	o.mu.Lock()
	f := o.m[dgst]
	o.mu.Unlock()
	if f != nil {
		return f, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if kept := o.m[dgst]; kept != nil {
		f.Close() // another request opened it meanwhile
		return kept, nil
	}
	if o.m == nil {
		o.m = make(map[digest.Digest]*os.File)
	}
	if len(o.m) >= openFilesMax {
		for k, old := range o.m {
			// A read in progress on it finishes; later ones fail with
			// os.ErrClosed, never on a reused descriptor.
			old.Close()
			delete(o.m, k)
			break
		}
	}
	o.m[dgst] = f
	return f, nil
}

// forget closes and drops dgst's file (only f, when f is not nil: another
// request may have opened a fresh one since).
func (o *openFiles) forget(dgst digest.Digest, f *os.File) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if kept := o.m[dgst]; kept != nil && (f == nil || kept == f) {
		kept.Close()
		delete(o.m, dgst)
	}
}

// ReadSmall reads the whole data of a blob described by desc into p, which
// must be exactly desc.Size long, from the filesystem driver's data file
// kept open (see openFiles). false, having read nothing usable, when it
// cannot: not the filesystem driver, the data gone or of another size, or
// any error. Only for bodies small enough to be copied (large ones go to
// sendfile from a file of their own, whose offset is theirs).
func (s *Store) ReadSmall(desc v1.Descriptor, p []byte) bool {
	if s.fileRoot == "" || int64(len(p)) != desc.Size {
		return false
	}
	path := filepath.Join(s.fileRoot, filepath.FromSlash(BlobDataPath(desc.Digest)))
	for range 2 { // a second time after a kept file turned out stale
		f, err := s.files.get(desc.Digest, path)
		if err != nil {
			return false
		}
		fi, err := f.Stat()
		if err != nil {
			s.files.forget(desc.Digest, f)
			return false
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Nlink == 0 {
			// Removed (or replaced) since it was opened.
			s.files.forget(desc.Digest, f)
			continue
		}
		if fi.Size() != desc.Size {
			return false
		}
		n, err := f.ReadAt(p, 0)
		return n == len(p) && (err == nil || n == len(p))
	}
	return false
}

// Linked is the descriptor of dgst linked in the repository stored as
// repo, when the link memo holds one read within linkMemoFor (see
// linkmemo.go); false otherwise, when the caller reads it through
// distribution (Repository's Blobs().Stat), which refreshes the memo.
func (s *Store) Linked(repo string, dgst digest.Digest) (v1.Descriptor, bool) {
	return s.links.get(linkKey{repo, dgst}, s.clock())
}
