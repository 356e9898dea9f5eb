package expiry

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/store"
)

// The size bound (maxsize): once stored data passes maxsize, content goes
// in order of least recent pull, down to the low watermark. The size is
// kept in an index beside the pull records, so that a check costs no walk
// of the storage; the index is rebuilt from storage at startup and every
// ReconcileInterval (another cache sharing the storage adds and removes
// content this one does not see).
//
// What goes is a whole digest: its data, every repository link its
// records name, and its records. A shared blob's last pull is the latest
// over every repository, so it goes only when none of them pulled it
// recently; removing one repository's link would free nothing, so the
// index never counts links.

// ReconcileInterval is how often the size index is rebuilt from storage.
const ReconcileInterval = time.Hour

// SizeStats are what one eviction pass did.
type SizeStats struct {
	Stored  int64 // bytes stored after the pass, as the index counts them
	Removed int   // digests removed
	Bytes   int64 // bytes of data removed
	Busy    int   // candidates skipped because they are being filled or served
	Pinned  int   // digests never evicted by size, as pin matches one of their repositories
}

// sizeEntry is what the index knows of one digest.
type sizeEntry struct {
	size     int64     // bytes of data; 0 until known
	last     time.Time // latest pull over every repository
	repos    []string  // the repositories it was pulled through
	oversize bool      // larger than maxsize: removed as soon as nobody uses it
}

// sizeIndex counts the bytes stored, by digest.
type sizeIndex struct {
	mu      sync.Mutex
	entries map[digest.Digest]*sizeEntry
	total   int64
}

func newSizeIndex() *sizeIndex { return &sizeIndex{entries: map[digest.Digest]*sizeEntry{}} }

func (x *sizeIndex) entry(d digest.Digest) *sizeEntry {
	e := x.entries[d]
	if e == nil {
		e = &sizeEntry{}
		x.entries[d] = e
	}
	return e
}

// pulled notes a pull of ref at at.
func (x *sizeIndex) pulled(ref store.Ref, at time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.entry(ref.Digest)
	if at.After(e.last) {
		e.last = at
	}
	if ref.Repo != "" && !slices.Contains(e.repos, ref.Repo) {
		e.repos = append(e.repos, ref.Repo)
	}
}

// stored notes that d's data of size bytes is in storage, and returns the
// total.
func (x *sizeIndex) stored(d digest.Digest, size int64, at time.Time, oversize bool) int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.entry(d)
	if e.last.IsZero() {
		e.last = at
	}
	x.total += size - e.size
	e.size = size
	e.oversize = e.oversize || oversize
	return x.total
}

// removed drops d.
func (x *sizeIndex) removed(d digest.Digest) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if e := x.entries[d]; e != nil {
		x.total -= e.size
		delete(x.entries, d)
	}
}

// usage is the total and the bytes of oversize entries (which go anyway,
// so they never make other content go).
func (x *sizeIndex) usage() (total, oversize int64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range x.entries {
		if e.oversize {
			oversize += e.size
		}
	}
	return x.total, oversize
}

// candidate is a digest eviction may remove.
type candidate struct {
	dgst digest.Digest
	sizeEntry
}

// candidates lists the digests with data, oversize ones first, then by
// least recent pull.
func (x *sizeIndex) candidates() []candidate {
	x.mu.Lock()
	out := make([]candidate, 0, len(x.entries))
	for d, e := range x.entries {
		if e.size > 0 {
			c := candidate{dgst: d, sizeEntry: *e}
			c.repos = slices.Clone(e.repos)
			out = append(out, c)
		}
	}
	x.mu.Unlock()
	slices.SortFunc(out, func(a, b candidate) int {
		if a.oversize != b.oversize {
			if a.oversize {
				return -1
			}
			return 1
		}
		if c := a.last.Compare(b.last); c != 0 {
			return c
		}
		return cmpDigest(a.dgst, b.dgst)
	})
	return out
}

// replace swaps in an index rebuilt from storage, keeping what happened
// since the rebuild started: later pulls, and content stored meanwhile.
func (x *sizeIndex) replace(fresh map[digest.Digest]*sizeEntry, started time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for d, old := range x.entries {
		f, ok := fresh[d]
		switch {
		case !ok && old.last.After(started) && old.size > 0:
			fresh[d] = old // stored since the walk passed it
		case ok:
			if old.last.After(f.last) {
				f.last = old.last
			}
			f.oversize = old.oversize
			for _, r := range old.repos {
				if !slices.Contains(f.repos, r) {
					f.repos = append(f.repos, r)
				}
			}
		}
	}
	x.entries = fresh
	x.total = 0
	for _, e := range fresh {
		x.total += e.size
	}
}

func cmpDigest(a, b digest.Digest) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Stored notes that a blob or manifest of size bytes was committed to
// storage. Past maxsize it wakes the evictor; a blob larger than maxsize
// is logged and removed as soon as nobody streams it.
func (e *Expiry) Stored(dgst digest.Digest, size int64) {
	if e == nil || e.maxSize <= 0 {
		return
	}
	oversize := size > e.maxSize
	total := e.size.stored(dgst, size, e.now(), oversize)
	if e.cl.Sizes != nil {
		// Every replica's commits count. Redis down: this replica's
		// count, until it is back.
		ctx, cancel := context.WithTimeout(context.Background(), sizesTimeout)
		if shared, err := e.cl.Sizes.Add(ctx, dgst, size); err == nil {
			total = shared
		}
		cancel()
	}
	e.metrics.SetStoredBytes(total)
	if oversize {
		e.log.WithFields(map[string]any{"digest": dgst, "bytes": size, "maxsize": e.maxSize}).
			Warn("size bound: blob larger than maxsize; served to its clients, not kept")
	}
	if total > e.maxSize {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// Reconcile rebuilds the size index from storage: every blob's data and
// size, and every pull record. The first reconcile (or sweep) of an
// instance first adopts what it finds without a record, as pulled now.
func (e *Expiry) Reconcile(ctx context.Context) error {
	if e == nil || e.maxSize <= 0 {
		return nil
	}
	e.sweepMu.Lock()
	defer e.sweepMu.Unlock()
	return e.reconcileLocked(ctx)
}

func (e *Expiry) reconcileLocked(ctx context.Context) error {
	if err := e.adoptOnce(ctx); err != nil {
		return err
	}
	if err := e.Flush(ctx); err != nil {
		// Pulls still in Redis are merged candidate by candidate
		// (removeForSize) instead.
		e.log.WithError(err).Warn("size bound: cannot write the pull index to storage before rebuilding the size index")
	}
	started := e.now()
	fresh := map[digest.Digest]*sizeEntry{}
	err := e.store.EnumerateData(ctx, func(d digest.Digest) error {
		desc, err := e.store.Stat(ctx, d)
		if err != nil {
			if store.IsNotFound(err) {
				return nil
			}
			return err
		}
		fresh[d] = &sizeEntry{size: desc.Size, oversize: desc.Size > e.maxSize}
		return nil
	})
	if err != nil {
		return fmt.Errorf("listing stored data: %w", err)
	}
	records, err := e.pulls.all(ctx)
	if err != nil {
		return fmt.Errorf("reading pull records: %w", err)
	}
	for d, recs := range records {
		f := fresh[d]
		if f == nil {
			continue // records without data: nothing to free
		}
		for _, r := range recs {
			if r.at.After(f.last) {
				f.last = r.at
			}
			if r.Repo != "" && !slices.Contains(f.repos, r.Repo) {
				f.repos = append(f.repos, r.Repo)
			}
		}
	}
	e.size.replace(fresh, started)
	total, _ := e.size.usage()
	if e.cl.Sizes != nil {
		sizes := make(map[digest.Digest]int64, len(fresh))
		for d, f := range fresh {
			sizes[d] = f.size
		}
		if total, err = e.cl.Sizes.Replace(ctx, sizes); err != nil {
			return fmt.Errorf("writing the size index to the cluster: %w", err)
		}
	}
	e.metrics.SetStoredBytes(total)
	e.reconciled = true
	return nil
}

// storedGaugeInterval is how often a replica reads the cluster's count of
// stored bytes for its gauge (a fraction of a usual scrape interval).
const storedGaugeInterval = 5 * time.Second

// sizesTimeout bounds a call to the cluster's sizes outside a request.
const sizesTimeout = 2 * time.Second

// sizeLeaseTTL bounds one replica's eviction pass: it holds the size
// lease that long at most (released when the pass ends), so that a
// replica that dies mid-pass holds up the others no longer.
const sizeLeaseTTL = 5 * time.Minute

// storedTotal is the bytes stored: every replica's with cluster sizes
// (this replica's own count if they cannot be read), else this one's.
func (e *Expiry) storedTotal(ctx context.Context) (total, oversize int64) {
	total, oversize = e.size.usage()
	if e.cl.Sizes != nil {
		if shared, err := e.cl.Sizes.Total(ctx); err == nil {
			total = shared
		}
	}
	return total, oversize
}

// EnforceSize removes content by least recent pull until stored data is
// at most the low watermark, if it passed maxsize; never what is in use or
// pinned. It reconciles first if the index was never built.
func (e *Expiry) EnforceSize(ctx context.Context) (SizeStats, error) {
	var st SizeStats
	if e == nil || e.maxSize <= 0 {
		return st, nil
	}
	e.sweepMu.Lock()
	defer e.sweepMu.Unlock()
	if e.cl.Leases != nil && e.cl.Sizes != nil {
		// Replicas: the total is the cluster's; one replica evicts at a
		// time, from an index it rebuilds first (the others' commits and
		// pulls are in storage and Redis, not in its memory).
		total, oversize := e.storedTotal(ctx)
		st.Stored = total
		if total-oversize <= e.maxSize && oversize == 0 {
			return st, nil
		}
		l, ok, err := e.cl.Leases.Acquire(ctx, "size", e.cl.Owner, sizeLeaseTTL)
		if err != nil || !ok {
			return st, err // another replica evicts (or Redis is down: nothing can be removed)
		}
		defer func() { _ = e.cl.Leases.Release(context.WithoutCancel(ctx), l) }()
		if err := e.reconcileLocked(ctx); err != nil {
			return st, err
		}
	} else if !e.reconciled {
		if err := e.reconcileLocked(ctx); err != nil {
			return st, err
		}
	}
	total, oversize := e.size.usage()
	st.Stored = total
	if total-oversize <= e.maxSize && oversize == 0 {
		return st, nil
	}
	// Oversize blobs go whatever the total; other content only while the
	// rest passed maxsize, down to the low watermark.
	evictOthers := total-oversize > e.maxSize
	target := e.maxSize * int64(e.lowWatermark) / 100
	for _, c := range e.size.candidates() {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if !c.oversize {
			total, oversize = e.size.usage()
			if !evictOthers || total-oversize <= target {
				break // candidates list the oversize ones first
			}
		}
		if !c.oversize && e.pinned(c.repos) {
			st.Pinned++
			continue
		}
		if ok, err := e.inUse.BeginRemoval(ctx, c.dgst); !ok {
			if err != nil {
				e.log.WithError(err).WithField("digest", c.dgst).Warn("size bound: cannot tell whether it is in use; keeping it")
			}
			st.Busy++
			continue
		}
		rctx, cancel := e.removalContext(ctx)
		removed, bytes, err := e.removeForSize(rctx, c)
		cancel()
		e.inUse.EndRemoval(context.WithoutCancel(ctx), c.dgst)
		switch {
		case err != nil:
			e.log.WithError(err).WithField("digest", c.dgst).Warn("size bound: cannot remove; trying the next")
		case removed:
			st.Removed++
			st.Bytes += bytes
		}
	}
	st.Stored, _ = e.storedTotal(ctx)
	e.metrics.SetStoredBytes(st.Stored)
	return st, nil
}

func (e *Expiry) pinned(repos []string) bool {
	if e.pin == nil {
		return false
	}
	return slices.ContainsFunc(repos, e.pin)
}

// removeForSize removes c unless another cache sharing the storage pulled
// it since the index saw its last pull, or one of its repositories is
// pinned after all (records the index had not seen).
func (e *Expiry) removeForSize(ctx context.Context, c candidate) (bool, int64, error) {
	recs, err := e.pulls.of(ctx, c.dgst)
	if err != nil {
		return false, 0, err
	}
	if e.cl.Pulls != nil {
		// Pulls not flushed to storage yet count too.
		idx, err := e.cl.Pulls.Of(ctx, c.dgst)
		if err != nil {
			return false, 0, fmt.Errorf("reading the pull index: %w", err)
		}
		recs = mergePulls(recs, idx)
	}
	var repos []string
	for _, r := range recs {
		// A second's slack: this instance's own record of a pull is
		// timed a little after its index's note of it.
		if r.at.After(c.last.Add(time.Second)) {
			e.size.pulled(r.Ref, r.at)
			return false, 0, nil
		}
		repos = append(repos, r.Repo)
	}
	if !c.oversize && e.pinned(repos) {
		return false, 0, nil
	}
	reason, msg := ReasonSize, "size bound: removed the least recently pulled content"
	if c.oversize {
		msg = "size bound: removed a blob larger than maxsize once nobody used it"
	}
	removed, bytes, err := e.removeNow(ctx, c.dgst, recs, reason, msg)
	if removed && bytes == 0 {
		bytes = c.size
	}
	return removed, bytes, err
}

// runSize reconciles at once, then evicts whenever Stored passes maxsize
// (and again a second later while in-use content kept it above), and
// reconciles every ReconcileInterval, until ctx ends.
func (e *Expiry) runSize(ctx context.Context) {
	rec := time.NewTicker(ReconcileInterval)
	defer rec.Stop()
	var retry <-chan time.Time
	enforce := func() {
		st, err := e.EnforceSize(ctx)
		if err != nil && ctx.Err() == nil {
			e.log.WithError(err).Warn("size bound: eviction failed; retrying at the next store")
		}
		retry = nil
		if st.Busy > 0 && st.Stored > e.maxSize {
			retry = time.After(time.Second)
		}
	}
	var gauge <-chan time.Time
	if e.cl.Leases != nil && e.cl.Sizes != nil {
		// The first replica to start builds the cluster's count (the
		// others' evictions read it).
		if err := e.reconcileShared(ctx); err != nil && ctx.Err() == nil {
			e.log.WithError(err).Warn("size bound: building the size index failed; retrying in an hour")
		}
		// The stored-bytes gauge of every replica shows the cluster's
		// count, which the others change.
		t := time.NewTicker(storedGaugeInterval)
		defer t.Stop()
		gauge = t.C
	}
	enforce()
	for {
		select {
		case <-ctx.Done():
			return
		case <-gauge:
			if total, err := e.cl.Sizes.Total(ctx); err == nil {
				e.metrics.SetStoredBytes(total)
			}
		case <-e.wake:
			enforce()
		case <-retry:
			enforce()
		case <-rec.C:
			if err := e.reconcileShared(ctx); err != nil && ctx.Err() == nil {
				e.log.WithError(err).Warn("size bound: reconciling the size index failed; retrying in an hour")
			}
			enforce()
		}
	}
}

// reconcileShared is the periodic rebuild of the size index: with
// replicas, by the one that takes the reconcile lease for the interval, so
// that N replicas do not each walk the storage.
func (e *Expiry) reconcileShared(ctx context.Context) error {
	if e.cl.Leases != nil && e.cl.Sizes != nil {
		_, ok, err := e.cl.Leases.Acquire(ctx, "size-reconcile", e.cl.Owner, ReconcileInterval)
		if err != nil || !ok {
			return err
		}
	}
	return e.Reconcile(ctx)
}
