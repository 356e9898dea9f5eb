package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/store"
)

// MemoryLeases are leases within one process: a single node's, where
// nothing else competes for them.
type MemoryLeases struct {
	now func() time.Time

	mu     sync.Mutex
	held   map[string]memLease
	fences map[string]int64
}

type memLease struct {
	Lease
	until time.Time
}

var _ Leases = (*MemoryLeases)(nil)

// NewMemoryLeases are leases in memory, expiring by now (time.Now if nil).
func NewMemoryLeases(now func() time.Time) *MemoryLeases {
	if now == nil {
		now = time.Now
	}
	return &MemoryLeases{now: now, held: make(map[string]memLease), fences: make(map[string]int64)}
}

// heldLocked returns the unexpired lease on key.
func (m *MemoryLeases) heldLocked(key string) (memLease, bool) {
	l, ok := m.held[key]
	if ok && !m.now().Before(l.until) {
		delete(m.held, key)
		return memLease{}, false
	}
	return l, ok
}

// Acquire implements Leases.
func (m *MemoryLeases) Acquire(_ context.Context, key, owner string, ttl time.Duration) (Lease, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.heldLocked(key); ok {
		return l.Lease, false, nil
	}
	m.fences[key]++
	l := Lease{Key: key, Owner: owner, Token: m.fences[key]}
	m.held[key] = memLease{Lease: l, until: m.now().Add(ttl)}
	return l, true, nil
}

// Renew implements Leases.
func (m *MemoryLeases) Renew(_ context.Context, l Lease, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.heldLocked(l.Key)
	if !ok || cur.Lease != l {
		return ErrLeaseLost
	}
	m.held[l.Key] = memLease{Lease: l, until: m.now().Add(ttl)}
	return nil
}

// Release implements Leases.
func (m *MemoryLeases) Release(_ context.Context, l Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.heldLocked(l.Key); ok && cur.Lease == l {
		delete(m.held, l.Key)
	}
	return nil
}

// Holder implements Leases.
func (m *MemoryLeases) Holder(_ context.Context, key string) (Lease, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.heldLocked(key)
	return l.Lease, ok, nil
}

// MemoryInUse is the in-use registry of one process: it covers its own
// requests and fills only.
type MemoryInUse struct {
	mu       sync.Mutex
	held     map[digest.Digest]int
	sweeping map[digest.Digest]chan struct{} // closed when the removal is done
}

var _ InUse = (*MemoryInUse)(nil)

// NewMemoryInUse is an empty in-use registry.
func NewMemoryInUse() *MemoryInUse {
	return &MemoryInUse{held: make(map[digest.Digest]int), sweeping: make(map[digest.Digest]chan struct{})}
}

// Hold implements InUse.
func (u *MemoryInUse) Hold(ctx context.Context, dgst digest.Digest) (release func(), err error) {
	for {
		u.mu.Lock()
		done, removing := u.sweeping[dgst]
		if !removing {
			u.held[dgst]++
			u.mu.Unlock()
			return u.releaser(dgst), nil
		}
		u.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// HoldAgain implements InUse.
func (u *MemoryInUse) HoldAgain(dgst digest.Digest) (release func()) {
	u.mu.Lock()
	u.held[dgst]++
	u.mu.Unlock()
	return u.releaser(dgst)
}

// releaser releases one hold of dgst, however often it is called.
func (u *MemoryInUse) releaser(dgst digest.Digest) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			defer u.mu.Unlock()
			if u.held[dgst]--; u.held[dgst] <= 0 {
				delete(u.held, dgst)
			}
		})
	}
}

// Holds reports how many holds dgst has in this process.
func (u *MemoryInUse) Holds(dgst digest.Digest) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.held[dgst]
}

// BeginRemoval implements InUse.
func (u *MemoryInUse) BeginRemoval(_ context.Context, dgst digest.Digest) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.held[dgst] > 0 {
		return false, nil
	}
	if _, ok := u.sweeping[dgst]; ok {
		return false, nil
	}
	u.sweeping[dgst] = make(chan struct{})
	return true, nil
}

// EndRemoval implements InUse.
func (u *MemoryInUse) EndRemoval(_ context.Context, dgst digest.Digest) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if ch, ok := u.sweeping[dgst]; ok {
		close(ch)
		delete(u.sweeping, dgst)
	}
}

// MemoryPulls is a pull index in memory.
type MemoryPulls struct {
	mu    sync.Mutex
	pulls map[digest.Digest]map[store.Ref]Pull
	dirty map[store.Ref]bool
}

var _ PullIndex = (*MemoryPulls)(nil)

// NewMemoryPulls is an empty pull index.
func NewMemoryPulls() *MemoryPulls {
	return &MemoryPulls{pulls: make(map[digest.Digest]map[store.Ref]Pull), dirty: make(map[store.Ref]bool)}
}

// Record implements PullIndex.
func (m *MemoryPulls) Record(_ context.Context, p Pull) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	refs := m.pulls[p.Digest]
	if refs == nil {
		refs = make(map[store.Ref]Pull)
		m.pulls[p.Digest] = refs
	}
	if old, ok := refs[p.Ref]; ok && !p.At.After(old.At) {
		if p.Size > 0 && old.Size == 0 {
			old.Size = p.Size
			refs[p.Ref] = old
		}
		return nil
	}
	if p.Size == 0 {
		p.Size = refs[p.Ref].Size
	}
	refs[p.Ref] = p
	m.dirty[p.Ref] = true
	return nil
}

// Of implements PullIndex.
func (m *MemoryPulls) Of(_ context.Context, dgst digest.Digest) ([]Pull, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Pull, 0, len(m.pulls[dgst]))
	for _, p := range m.pulls[dgst] {
		out = append(out, p)
	}
	return out, nil
}

// Drain implements PullIndex.
func (m *MemoryPulls) Drain(_ context.Context) ([]Pull, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Pull, 0, len(m.dirty))
	for r := range m.dirty {
		if p, ok := m.pulls[r.Digest][r]; ok {
			out = append(out, p)
		}
	}
	clear(m.dirty)
	return out, nil
}

// Forget implements PullIndex.
func (m *MemoryPulls) Forget(_ context.Context, dgst digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for r := range m.pulls[dgst] {
		delete(m.dirty, r)
	}
	delete(m.pulls, dgst)
	return nil
}

// MemorySizes are Sizes in memory: one node's.
type MemorySizes struct {
	mu    sync.Mutex
	sizes map[digest.Digest]int64
	total int64
}

var _ Sizes = (*MemorySizes)(nil)

// NewMemorySizes counts nothing yet.
func NewMemorySizes() *MemorySizes { return &MemorySizes{sizes: make(map[digest.Digest]int64)} }

// Add implements Sizes.
func (m *MemorySizes) Add(_ context.Context, dgst digest.Digest, size int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sizes[dgst]; !ok {
		m.sizes[dgst] = size
		m.total += size
	}
	return m.total, nil
}

// Remove implements Sizes.
func (m *MemorySizes) Remove(_ context.Context, dgst digest.Digest) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if size, ok := m.sizes[dgst]; ok {
		delete(m.sizes, dgst)
		m.total -= size
	}
	return m.total, nil
}

// Replace implements Sizes.
func (m *MemorySizes) Replace(_ context.Context, sizes map[digest.Digest]int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sizes = make(map[digest.Digest]int64, len(sizes))
	m.total = 0
	for d, n := range sizes {
		m.sizes[d] = n
		m.total += n
	}
	return m.total, nil
}

// Total implements Sizes.
func (m *MemorySizes) Total(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total, nil
}
