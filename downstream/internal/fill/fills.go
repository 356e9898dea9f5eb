// Package fill runs the cache's coalesced fills: one upstream fetch per
// missing blob, streamed to every waiting request as it arrives from a
// bounded window in memory (stream.go), verified against its digest, and
// committed to storage only then (fill.go).
package fill

import (
	"context"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/expiry"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
)

// Fills are the fills in flight of one cache instance.
type Fills struct {
	up      *upstream.Set
	store   *store.Store
	access  *access.Access
	expiry  *expiry.Expiry
	metrics *metrics.Metrics
	log     *logrus.Entry
	now     func() time.Time
	timeout time.Duration // filltimeout
	// storeLag is how far a fill may run ahead of its storage writes:
	// past the part an object store's writer uploads inside Write, so that
	// the download goes on while a part uploads.
	storeLag int64
	// window is how much of a fill is kept in memory behind its newest
	// byte (windowSize, fileWindow).
	window int64

	// Fills run until ctx ends (Close), each for at most timeout.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // fills in flight

	chunks chunkList // free chunks of finished fills' windows

	// peers, set once before serving (SetPeers), makes one fetch per blob
	// cluster-wide; nil on a single node.
	peers *Peers

	mu sync.Mutex
	// fills are by registry and digest: a blob of one digest at two
	// registries is fetched by each from its own upstreams, with its own
	// credentials; no request of one registry waits on the other's fill.
	fills map[fillKey]*Fill
	// stored are the digests fills committed lately: a request that
	// looked at storage before a fill committed and reaches Join after it
	// ended finds the blob stored, instead of fetching it a second time.
	stored map[digest.Digest]time.Time
}

// fillKey names a fill: a digest at a registry (ident's origin).
type fillKey struct {
	origin string
	dgst   digest.Digest
}

// storedFor is how long a committed fill answers Join: far longer than a
// request takes from its look at storage to Join, short enough to keep the
// map small.
const storedFor = time.Minute

// Deps are what fills use.
type Deps struct {
	Upstream *upstream.Set
	Store    *store.Store
	Access   *access.Access
	Expiry   *expiry.Expiry // nil without blobttl
	Metrics  *metrics.Metrics
	Log      *logrus.Entry
	Now      func() time.Time
	Timeout  time.Duration // the whole of one fill
}

// New is an instance's fills.
func New(d Deps) *Fills {
	c := &Fills{
		up: d.Upstream, store: d.Store, access: d.Access, expiry: d.Expiry, metrics: d.Metrics,
		log: d.Log, now: d.Now, timeout: d.Timeout,
		storeLag: storeLag + d.Store.PartSize(),
		window:   windowSize,
		fills:    make(map[fillKey]*Fill),
		stored:   make(map[digest.Digest]time.Time),
	}
	if d.Store.Readable() {
		c.window, c.storeLag = fileWindow, fileWindow
	}
	// The chunks of one fill are kept free: 10 on the filesystem, at most
	// 16 (4 MiB) on object stores, whose part uploads cost far more than
	// a fill's page faults.
	c.chunks.max = int(min((c.window+c.storeLag+storeSlack)/Chunk+2, 16))
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Join returns the fill of dgst, starting
// one that fetches with a when there is none (leader). A request that
// joins is enlisted, to take the fill over should the origin refuse the
// credential it fetches with, only if allowed: the origin allowed it.
//
// It returns no fill when a fill committed dgst lately (unless fetch is
// set): the caller serves the blob from storage instead. One fetch per
// blob, even for a request that looked at storage before the blob was
// there and comes here after its fill ended.
func (c *Fills) Join(ctx context.Context, a *Asker, dgst digest.Digest, allowed, fetch bool) (f *Fill, leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f = c.fills[fillKey{a.Repo.Origin(), dgst}]; f == nil {
		if at, ok := c.stored[dgst]; ok && !fetch && c.now().Sub(at) < storedFor {
			return nil, false
		}
		return c.startFill(ctx, a, dgst), true
	}
	if allowed {
		c.enlistLocked(f, a)
	}
	return f, false
}

// committed notes, with c.mu held, that a fill stored dgst, and forgets
// what is older than storedFor.
func (c *Fills) committed(dgst digest.Digest) {
	now := c.now()
	for d, at := range c.stored {
		if now.Sub(at) >= storedFor {
			delete(c.stored, d)
		}
	}
	c.stored[dgst] = now
}

// Sharing is how many requests wait for the answer to the origin request
// of dgst's fills (Shared): what a test waits for before it lets that
// answer come.
func (c *Fills) Sharing(dgst digest.Digest) int {
	c.mu.Lock()
	var fs []*Fill
	for k, f := range c.fills {
		if k.dgst == dgst {
			fs = append(fs, f)
		}
	}
	c.mu.Unlock()
	n := 0
	for _, f := range fs {
		f.mu.Lock()
		n += f.sharing
		f.mu.Unlock()
	}
	return n
}

// Settle waits until no fill of dgst (at any registry) is in flight: the
// ones running now committed or failed. A client has every byte of a blob
// before its fill commits it; a caller that needs it in storage next
// (warming, which must not fetch it again for another image) waits here.
func (c *Fills) Settle(ctx context.Context, dgst digest.Digest) error {
	for {
		c.mu.Lock()
		var f *Fill
		for k, g := range c.fills {
			if k.dgst == dgst {
				f = g
				break
			}
		}
		c.mu.Unlock()
		if f == nil {
			return nil
		}
		// A fill leaves c.fills before it shows as finished.
		if _, err := f.Wait(ctx, func(s State) bool { return s.Finished }); err != nil {
			return err
		}
	}
}

// Enlist adds a, which the origin just allowed, to the askers f may fetch
// with (see Join).
func (c *Fills) Enlist(f *Fill, a *Asker) { c.enlist(f, a) }

// Close lets the fills in flight finish for grace, then cancels them and
// waits for them.
func (c *Fills) Close(grace time.Duration) {
	done := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.cancel()
		<-done
	}
	c.cancel()
	if c.peers != nil {
		c.peers.Client.CloseIdleConnections()
	}
}

// detach keeps ctx's values but not its cancellation, bounded by d and by
// the fills' lifetime: a fill outlives the request that started it.
func (c *Fills) detach(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	stop := context.AfterFunc(c.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}
