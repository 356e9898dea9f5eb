package expiry

import (
	"context"
	"sync"

	"github.com/opencontainers/go-digest"
)

// inUse keeps expiry away from content that is being filled or served: the
// sweeper skips a digest in use, and a request for a digest being removed
// waits until the removal is done, then finds it missing and fetches it
// again. It covers this process only; caches sharing storage are covered by
// the sweeper re-reading the records just before it removes anything.
//
// A nil *inUse (no blobttl) holds nothing.
type inUse struct {
	mu       sync.Mutex
	held     map[digest.Digest]int
	sweeping map[digest.Digest]chan struct{} // closed when the removal is done
}

func newInUse() *inUse {
	return &inUse{held: make(map[digest.Digest]int), sweeping: make(map[digest.Digest]chan struct{})}
}

// hold marks dgst in use until release is called, once.
func (u *inUse) hold(ctx context.Context, dgst digest.Digest) (release func(), err error) {
	if u == nil {
		return func() {}, nil
	}
	for {
		u.mu.Lock()
		done, removing := u.sweeping[dgst]
		if !removing {
			u.held[dgst]++
			u.mu.Unlock()
			return func() { u.release(dgst) }, nil
		}
		u.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// holdAgain adds a hold on a digest the caller already holds (so no removal
// can be under way): it never waits.
func (u *inUse) holdAgain(dgst digest.Digest) (release func()) {
	if u == nil {
		return func() {}
	}
	u.mu.Lock()
	u.held[dgst]++
	u.mu.Unlock()
	return func() { u.release(dgst) }
}

func (u *inUse) release(dgst digest.Digest) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.held[dgst]--; u.held[dgst] <= 0 {
		delete(u.held, dgst)
	}
}

// beginRemoval claims dgst for removal, unless it is in use.
func (u *inUse) beginRemoval(dgst digest.Digest) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.held[dgst] > 0 {
		return false
	}
	u.sweeping[dgst] = make(chan struct{})
	return true
}

// endRemoval lets the requests waiting for dgst go on.
func (u *inUse) endRemoval(dgst digest.Digest) {
	u.mu.Lock()
	defer u.mu.Unlock()
	close(u.sweeping[dgst])
	delete(u.sweeping, dgst)
}
