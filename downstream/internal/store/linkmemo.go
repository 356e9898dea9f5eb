package store

import (
	"context"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// linkMemoFor is how long a repository's link to a blob, once read, is
// taken as read: a warm hit on the filesystem driver otherwise reads the
// link file and stats the data (five system calls) on every request, a
// third of a small hit's CPU (`bench -only warm-load -cpuprofile`). A link
// the cache itself removes (Unlink) is forgotten at once; one another
// replica sharing the storage removes is believed for at most this long,
// far within any decision lifetime. The data is opened on every hit
// anyway: data that went is never served from the memo.
const linkMemoFor = time.Second

// linkMemoMax bounds the memo; it is emptied when full.
const linkMemoMax = 8192

type linkKey struct {
	repo string
	dgst digest.Digest
}

type linkEntry struct {
	desc v1.Descriptor
	at   time.Time
}

// linkMemo remembers the linked Stats of recent hits.
type linkMemo struct {
	mu sync.Mutex
	m  map[linkKey]linkEntry
}

func (l *linkMemo) get(k linkKey, now time.Time) (v1.Descriptor, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[k]
	if !ok || now.Sub(e.at) >= linkMemoFor || now.Before(e.at) {
		return v1.Descriptor{}, false
	}
	return e.desc, true
}

func (l *linkMemo) put(k linkKey, desc v1.Descriptor, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil || len(l.m) >= linkMemoMax {
		l.m = make(map[linkKey]linkEntry)
	}
	l.m[k] = linkEntry{desc, now}
}

func (l *linkMemo) forget(k linkKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.m, k)
}

// memoRepository is a repository whose blob store remembers its links.
type memoRepository struct {
	distribution.Repository
	s *Store
}

func (r memoRepository) Blobs(ctx context.Context) distribution.BlobStore {
	return memoBlobs{BlobStore: r.Repository.Blobs(ctx), s: r.s, repo: r.Named().Name()}
}

type memoBlobs struct {
	distribution.BlobStore
	s    *Store
	repo string
}

// Stat is the repository's link and the data's size, from the memo when
// read within linkMemoFor.
func (b memoBlobs) Stat(ctx context.Context, dgst digest.Digest) (v1.Descriptor, error) {
	k := linkKey{b.repo, dgst}
	if d, ok := b.s.links.get(k, b.s.clock()); ok {
		return d, nil
	}
	d, err := b.BlobStore.Stat(ctx, dgst)
	if err == nil {
		b.s.links.put(k, d, b.s.clock())
	}
	return d, err
}

// Delete forgets the link too.
func (b memoBlobs) Delete(ctx context.Context, dgst digest.Digest) error {
	b.s.links.forget(linkKey{b.repo, dgst})
	return b.BlobStore.Delete(ctx, dgst)
}

// clock is the memo's time (a test's, or the wall clock).
func (s *Store) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}
