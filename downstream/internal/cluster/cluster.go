// Package cluster is what replicas of the cache sharing one storage
// coordinate through: fill and sweep leases (Leases), the digests any
// replica is serving or filling (InUse), the last pull of each digest
// and repository (PullIndex), and the bytes stored (Sizes).
//
// Each is a small interface with two implementations: in memory (memory.go:
// one node, the default without a redis block) and in Redis (redis.go:
// replicas). One conformance suite (conformance_test.go) runs against both.
// DESIGN.md next to this file states the lease protocol, what its fencing
// token protects, and what each failure costs.
package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/store"
)

// ErrLeaseLost is a Renew or Release of a lease that expired, or that
// another owner took over since.
var ErrLeaseLost = errors.New("cluster: lease lost")

// Lease is a lease held (or, from Acquire and Holder, seen held): its key,
// its owner, and its fencing token. Tokens of one key only grow: a lease
// acquired later has a greater token, whoever holds it.
type Lease struct {
	Key   string
	Owner string // what the holder named itself: a replica's internal URL
	Token int64
}

// Leases grants exclusive, expiring leases on names (a digest's fill, the
// sweep). A lease that is not renewed within its ttl expires, so a replica
// that dies or stalls loses it within a bounded time.
type Leases interface {
	// Acquire takes key for ttl, for owner, when nobody holds it. When
	// somebody does, ok is false and l is the holder's lease.
	Acquire(ctx context.Context, key, owner string, ttl time.Duration) (l Lease, ok bool, err error)
	// Renew extends l for ttl from now; ErrLeaseLost when l is no longer
	// held (expired, or taken over).
	Renew(ctx context.Context, l Lease, ttl time.Duration) error
	// Release gives l up, if it is still held; releasing a lost lease is
	// no error.
	Release(ctx context.Context, l Lease) error
	// Holder returns the lease held on key, if any.
	Holder(ctx context.Context, key string) (l Lease, held bool, err error)
}

// InUse is the registry of digests being served or filled, by this replica
// or (in Redis) any replica: expiry and the size bound never remove a
// digest in use, and a request for a digest being removed waits for the
// removal to end (then finds it missing and fetches it again).
type InUse interface {
	// Hold marks dgst in use until release is called, once. While dgst is
	// being removed it waits for the removal to end, or for ctx.
	Hold(ctx context.Context, dgst digest.Digest) (release func(), err error)
	// HoldAgain adds a hold on a digest the caller already holds (so no
	// removal can be under way): it never waits.
	HoldAgain(dgst digest.Digest) (release func())
	// BeginRemoval claims dgst for removal, unless it is in use anywhere
	// the implementation sees. false (and no claim) when in use, or when
	// it cannot tell.
	BeginRemoval(ctx context.Context, dgst digest.Digest) (bool, error)
	// EndRemoval ends a removal BeginRemoval claimed.
	EndRemoval(ctx context.Context, dgst digest.Digest)
}

// Pull is one recorded pull: a digest through a repository (store.Ref), its
// time, and its size in bytes when known (0 otherwise).
type Pull struct {
	store.Ref
	At   time.Time
	Size int64
}

// PullIndex keeps the last pull of each digest and repository, cheaply
// (no storage write per pull), until a flusher drains it into storage.
type PullIndex interface {
	// Record notes a pull. An older time than the one held is ignored.
	Record(ctx context.Context, p Pull) error
	// Of returns the pulls of dgst held in the index.
	Of(ctx context.Context, dgst digest.Digest) ([]Pull, error)
	// Drain returns the pulls recorded since the last Drain (the newest per
	// Ref), to be written to storage. Whatever the caller fails to write
	// it records again.
	Drain(ctx context.Context) ([]Pull, error)
	// Forget drops what the index holds of dgst (it was removed).
	Forget(ctx context.Context, dgst digest.Digest) error
}

// Sizes counts the bytes of data stored, per digest, for the size bound:
// every replica adds what it commits and removes what it evicts, so that
// any of them knows the total without walking the storage.
type Sizes interface {
	// Add notes dgst stored with size bytes and returns the total. Adding
	// a digest counted already changes nothing (two replicas may commit
	// the same blob).
	Add(ctx context.Context, dgst digest.Digest, size int64) (total int64, err error)
	// Remove notes dgst removed and returns the total.
	Remove(ctx context.Context, dgst digest.Digest) (total int64, err error)
	// Replace sets every digest's size at once (from a walk of the
	// storage) and returns the total.
	Replace(ctx context.Context, sizes map[digest.Digest]int64) (total int64, err error)
	// Total is the bytes counted.
	Total(ctx context.Context) (int64, error)
}
