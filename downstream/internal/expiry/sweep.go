// Package expiry removes what nobody pulled for blobttl: last-pull records
// in the storage (records.go), the sweeper (this file), and the in-use
// guard that keeps it away from content being filled or served
// (cluster.InUse: this process's, or every replica's through Redis).
//
// Content nobody pulled through any cache sharing the storage for blobttl
// is removed, data included. A digest goes only when every record of it
// (one per repository it was pulled through) is older than blobttl plus the
// recording window: records are rewritten at most once per window, so a
// record may lag the last pull by up to that much, and nothing is removed
// before blobttl has passed.
package expiry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream/internal/cluster"
	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
)

// SweepStats are what one sweep did.
type SweepStats struct {
	Adopted int   // records written for content found without one (first sweep only)
	Kept    int   // digests pulled within blobttl
	Busy    int   // expired digests skipped because they are being filled or served
	Removed int   // digests removed
	Bytes   int64 // bytes of blob data removed
}

// Expiry is one instance's expiry. A nil *Expiry (no blobttl) records
// nothing, holds nothing and sweeps nothing.
type Expiry struct {
	store   *store.Store
	ttl     time.Duration
	now     func() time.Time
	log     *logrus.Entry
	metrics *metrics.Metrics
	pulls   *pulls
	inUse   cluster.InUse
	cl      Cluster

	// The size bound (size.go); maxSize 0: none.
	maxSize      int64
	lowWatermark int               // percent of maxSize
	pin          func(string) bool // repositories never evicted by size; nil: none
	size         *sizeIndex        // bytes stored, by digest
	wake         chan struct{}     // Stored passed maxSize
	reconciled   bool              // the size index was built; under sweepMu

	sweepMu sync.Mutex // one sweep at a time
	adopted bool       // the first sweep adopted unrecorded content; under sweepMu
}

// Cluster is what expiry shares with the other replicas on its storage.
// The zero value is a single node: holds in memory, pull records written
// to storage directly, every sweep run here.
type Cluster struct {
	// InUse covers the pulls and fills of every replica. Nil: this
	// process's only (cluster.MemoryInUse).
	InUse cluster.InUse
	// Leases, if set, make the periodic sweep one per interval
	// cluster-wide: the replica that takes the sweep lease sweeps; the
	// lease lasts the interval and is not released early.
	Leases cluster.Leases
	// Owner is this replica's name in the leases.
	Owner string
	// Pulls, if set, keeps pull times (in Redis), flushed to the storage
	// records every Flush: no storage write per pull on any replica.
	Pulls cluster.PullIndex
	Flush time.Duration
	// Sizes, if set, counts the bytes stored by every replica, for the
	// size bound (size.go); then only the replica holding the size lease
	// evicts, and one replica per ReconcileInterval rebuilds the count.
	Sizes cluster.Sizes
	// RemovalTTL is how long InUse's claim of a digest for removal lasts
	// when not ended (Redis: leasettl); 0, until EndRemoval. A removal
	// stops before its next deletion once it took half of it: a sweeper
	// that stalled (SIGSTOP, a long pause) may have lost its claim, and a
	// replica may be serving the digest again.
	RemovalTTL time.Duration
}

// New is the expiry of content in st after ttl; nil when ttl is 0.
func New(st *store.Store, ttl time.Duration, now func() time.Time, log *logrus.Entry, m *metrics.Metrics, cl Cluster) *Expiry {
	return NewBounded(st, ttl, SizeBound{}, now, log, m, cl)
}

// SizeBound is the size bound (size.go): maxsize, the low watermark and
// the pinned repositories. The zero value is no bound.
type SizeBound struct {
	MaxSize      int64             // bytes; 0: no bound
	LowWatermark int               // percent of MaxSize eviction goes down to; 0: config.DefaultLowWatermark
	Pinned       func(string) bool // repositories the size bound never evicts from; nil: none
}

// Eviction reasons, as logged and counted.
const (
	ReasonTTL  = "ttl"
	ReasonSize = "size"
)

// recordWindowWithoutTTL is how often a pull record is rewritten when only
// the size bound reads them: the resolution of "least recent pull" between
// caches sharing the storage (this instance's index sees every pull it
// serves at once).
const recordWindowWithoutTTL = time.Minute

// NewBounded is the expiry of content in st after ttl and past the size
// bound b; nil when neither removes anything.
func NewBounded(st *store.Store, ttl time.Duration, b SizeBound, now func() time.Time, log *logrus.Entry, m *metrics.Metrics, cl Cluster) *Expiry {
	if ttl <= 0 && b.MaxSize <= 0 {
		return nil
	}
	if cl.InUse == nil {
		cl.InUse = cluster.NewMemoryInUse()
	}
	window := ttl
	if window <= 0 {
		window = 10 * recordWindowWithoutTTL // records are written once per tenth
	}
	e := &Expiry{
		store: st, ttl: ttl, now: now, log: log, metrics: m,
		pulls: newPulls(st.Driver(), window, now, log),
		inUse: cl.InUse, cl: cl,
		maxSize: b.MaxSize, lowWatermark: b.LowWatermark, pin: b.Pinned,
		size: newSizeIndex(), wake: make(chan struct{}, 1),
	}
	if e.lowWatermark <= 0 || e.lowWatermark >= 100 {
		e.lowWatermark = config.DefaultLowWatermark
	}
	m.SetMaxSize(b.MaxSize)
	return e
}

// Interval is how often the sweeper runs: a tenth of blobttl, within
// [1s, 1h]. It bounds how long expired content outlives blobttl.
func Interval(ttl time.Duration) time.Duration {
	return min(max(ttl/10, time.Second), time.Hour)
}

// Record notes a pull of ref now (see pulls.record): in the pull index
// when there is one (storage gets it with the next flush), else, or when
// the index fails (Redis down), in storage.
func (e *Expiry) Record(ctx context.Context, ref store.Ref) {
	if e == nil {
		return
	}
	if e.maxSize > 0 {
		e.size.pulled(ref, e.now())
	}
	if e.cl.Pulls == nil {
		e.pulls.record(ctx, ref)
		return
	}
	e.pulls.recordWith(ctx, ref, func(ctx context.Context, k store.Ref, at time.Time) error {
		if err := e.cl.Pulls.Record(ctx, cluster.Pull{Ref: k, At: at}); err == nil {
			return nil
		}
		return e.pulls.write(ctx, k, at)
	})
}

// Flush writes the pulls the index holds to the storage records. A pull
// that cannot be written goes back to the index, for the next flush.
func (e *Expiry) Flush(ctx context.Context) error {
	if e == nil || e.cl.Pulls == nil {
		return nil
	}
	batch, err := e.cl.Pulls.Drain(ctx)
	if err != nil {
		return err
	}
	var failed error
	for _, p := range batch {
		if err := e.pulls.write(ctx, p.Ref, p.At); err != nil {
			failed = err
			_ = e.cl.Pulls.Record(ctx, p)
		}
	}
	return failed
}

// runFlush flushes the pull index every Flush until ctx ends, then once
// more.
func (e *Expiry) runFlush(ctx context.Context) {
	t := time.NewTicker(e.cl.Flush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			_ = e.Flush(fctx)
			return
		case <-t.C:
		}
		if err := e.Flush(ctx); err != nil && ctx.Err() == nil {
			e.log.WithError(err).Warn("expiry: cannot write pull times to storage; retrying at the next flush")
		}
	}
}

// Hold keeps dgst from removal until release is called, once; while it is
// being removed, Hold waits for the removal to end.
func (e *Expiry) Hold(ctx context.Context, dgst digest.Digest) (release func(), err error) {
	if e == nil {
		return func() {}, nil
	}
	return e.inUse.Hold(ctx, dgst)
}

// HoldAgain adds a hold on a digest the caller already holds: it never
// waits.
func (e *Expiry) HoldAgain(dgst digest.Digest) (release func()) {
	if e == nil {
		return func() {}
	}
	return e.inUse.HoldAgain(dgst)
}

// Run sweeps at once (adopting what it finds), then every Interval until
// ctx ends.
func (e *Expiry) Run(ctx context.Context) {
	if e == nil {
		return
	}
	if e.cl.Pulls != nil && e.cl.Flush > 0 {
		flushed := make(chan struct{})
		defer func() { <-flushed }()
		go func() {
			defer close(flushed)
			e.runFlush(ctx)
		}()
	}
	if e.maxSize > 0 {
		if e.ttl <= 0 {
			e.runSize(ctx)
			return
		}
		done := make(chan struct{})
		defer func() { <-done }()
		go func() {
			defer close(done)
			e.runSize(ctx)
		}()
	}
	if e.ttl <= 0 {
		return
	}
	t := time.NewTicker(Interval(e.ttl))
	defer t.Stop()
	for {
		if _, err := e.sweepShared(ctx); err != nil && ctx.Err() == nil {
			e.log.WithError(err).Warn("expiry sweep failed; retrying at the next one")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepShared is a periodic sweep: with cluster leases, only by the
// replica that takes the sweep lease for this interval, so that N replicas
// do not each list the storage.
func (e *Expiry) sweepShared(ctx context.Context) (SweepStats, error) {
	if e.cl.Leases != nil {
		_, ok, err := e.cl.Leases.Acquire(ctx, "sweep", e.cl.Owner, Interval(e.ttl))
		if err != nil {
			// Redis down: no replica can tell what the others serve, so
			// nothing is removed until it is back.
			return SweepStats{}, nil
		}
		if !ok {
			return SweepStats{}, nil // another replica sweeps this interval
		}
	}
	return e.Sweep(ctx)
}

// Sweep removes the content nobody pulled for blobttl. The first sweep of
// an instance first adopts what it finds in storage without a record, as
// if pulled now. Sweeps run one at a time.
func (e *Expiry) Sweep(ctx context.Context) (SweepStats, error) {
	var st SweepStats
	if e == nil || e.ttl <= 0 {
		return st, nil
	}
	e.sweepMu.Lock()
	defer e.sweepMu.Unlock()
	if !e.adopted {
		n, err := e.adopt(ctx)
		st.Adopted = n
		if err != nil {
			return st, fmt.Errorf("adopting stored content: %w", err)
		}
		e.adopted = true
		if n > 0 {
			e.log.WithField("records", n).Info("expiry: adopted stored content without pull records, as pulled now")
		}
	}
	records, err := e.pulls.all(ctx)
	if err != nil {
		return st, fmt.Errorf("reading pull records: %w", err)
	}
	limit := e.ttl + e.pulls.window
	for dgst, recs := range records {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if !expired(recs, e.now(), limit) {
			st.Kept++
			continue
		}
		if ok, err := e.inUse.BeginRemoval(ctx, dgst); !ok {
			if err != nil {
				e.log.WithError(err).WithField("digest", dgst).Warn("expiry: cannot tell whether it is in use; keeping it until the next sweep")
			}
			st.Busy++
			continue
		}
		rctx, cancel := e.removalContext(ctx)
		removed, bytes, err := e.remove(rctx, dgst, limit)
		cancel()
		e.inUse.EndRemoval(context.WithoutCancel(ctx), dgst)
		switch {
		case err != nil:
			e.log.WithError(err).WithField("digest", dgst).Warn("expiry: cannot remove; retrying at the next sweep")
		case removed:
			st.Removed++
			st.Bytes += bytes
		default:
			st.Kept++
		}
	}
	e.pulls.prune(limit)
	return st, nil
}

// expired reports whether every record is older than limit.
func expired(recs []pullRecord, now time.Time, limit time.Duration) bool {
	for _, r := range recs {
		if now.Sub(r.at) <= limit {
			return false
		}
	}
	return len(recs) > 0
}

// remove deletes an expired digest: every repository link its records name,
// then the data, then the records. The records are read again first:
// another cache sharing the storage may just have pulled it. A link that
// cannot be removed keeps the data, so no repository is left pointing at
// deleted data.
func (e *Expiry) remove(ctx context.Context, dgst digest.Digest, limit time.Duration) (removed bool, bytes int64, err error) {
	recs, err := e.pulls.of(ctx, dgst)
	if err != nil {
		return false, 0, err
	}
	if e.cl.Pulls != nil {
		// Pulls not flushed to storage yet count too.
		idx, err := e.cl.Pulls.Of(ctx, dgst)
		if err != nil {
			return false, 0, fmt.Errorf("reading the pull index: %w", err)
		}
		recs = mergePulls(recs, idx)
	}
	if !expired(recs, e.now(), limit) {
		return false, 0, nil
	}
	return e.removeNow(ctx, dgst, recs, ReasonTTL, "expiry: removed content nobody pulled for blobttl")
}

// removeNow deletes dgst: every repository link its records name, then
// the data, then the records. It logs msg and counts the eviction under
// reason.
func (e *Expiry) removeNow(ctx context.Context, dgst digest.Digest, recs []pullRecord, reason, msg string) (removed bool, bytes int64, err error) {
	last := time.Time{}
	for _, r := range recs {
		if r.at.After(last) {
			last = r.at
		}
	}
	if desc, err := e.store.Stat(ctx, dgst); err == nil {
		bytes = desc.Size
	}
	var repos []string
	for _, r := range recs {
		if r.Kind == store.KindData {
			continue
		}
		if err := claimed(ctx); err != nil {
			return false, 0, err
		}
		if err := e.store.Unlink(ctx, r.Ref); err != nil {
			return false, 0, fmt.Errorf("unlinking from %s: %w", r.Repo, err)
		}
		repos = append(repos, r.Repo)
	}
	if err := claimed(ctx); err != nil {
		return false, 0, err
	}
	if err := e.store.RemoveData(ctx, dgst); err != nil {
		return false, 0, fmt.Errorf("removing data: %w", err)
	}
	// The data is gone: the bookkeeping below runs to its end.
	ctx = context.WithoutCancel(ctx)
	if err := e.store.Driver().Delete(ctx, digestRecordsDir(dgst)); err != nil && !store.IsNotFound(err) {
		return false, 0, fmt.Errorf("removing pull records: %w", err)
	}
	e.pulls.forget(dgst)
	e.size.removed(dgst)
	if e.cl.Sizes != nil {
		if total, err := e.cl.Sizes.Remove(ctx, dgst); err == nil {
			e.metrics.SetStoredBytes(total)
		}
	}
	if e.cl.Pulls != nil {
		_ = e.cl.Pulls.Forget(ctx, dgst)
	}
	e.metrics.Evicted(reason, bytes)
	slices.Sort(repos)
	fields := map[string]any{
		"digest": dgst, "bytes": bytes, "repositories": slices.Compact(repos),
		"last_pull": last.UTC().Format(time.RFC3339), "reason": reason,
	}
	if e.ttl > 0 {
		fields["blobttl"] = config.ShortDuration(e.ttl)
	}
	if e.maxSize > 0 {
		fields["maxsize"] = e.maxSize
	}
	e.log.WithFields(fields).Info(msg)
	return true, bytes, nil
}

// removalContext bounds one digest's removal by half the claim's
// lifetime (Cluster.RemovalTTL), counted from now, just after the claim.
func (e *Expiry) removalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if e.cl.RemovalTTL <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, e.cl.RemovalTTL/2, errClaimLapsing)
}

// errClaimLapsing stops a removal that took half its claim's lifetime.
var errClaimLapsing = errors.New("the removal took half the lifetime of its in-use claim (a stall?); kept until the next sweep")

// claimed returns why a removal must stop before its next deletion: its
// claim is lapsing, or ctx ended.
func claimed(ctx context.Context) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// adoptOnce adopts unrecorded content the first time; under sweepMu.
func (e *Expiry) adoptOnce(ctx context.Context) error {
	if e.adopted {
		return nil
	}
	n, err := e.adopt(ctx)
	if err != nil {
		return fmt.Errorf("adopting stored content: %w", err)
	}
	e.adopted = true
	if n > 0 {
		e.log.WithField("records", n).Info("expiry: adopted stored content without pull records, as pulled now")
	}
	return nil
}

// adopt writes a record, as pulled now, for every link and every blob
// found in storage without one: content stored before expiry was enabled,
// or by a cache that died before recording it.
func (e *Expiry) adopt(ctx context.Context) (int, error) {
	now := e.now()
	n := 0
	add := func(k store.Ref) error {
		wrote, err := e.pulls.adopt(ctx, k, now)
		if wrote {
			n++
		}
		return err
	}
	if err := e.store.WalkLinks(ctx, add); err != nil {
		return n, err
	}
	err := e.store.EnumerateData(ctx, func(d digest.Digest) error {
		has, err := e.pulls.hasAny(ctx, d)
		if err != nil || has {
			return err
		}
		return add(store.Ref{Digest: d, Kind: store.KindData})
	})
	return n, err
}

// mergePulls is recs with the newer times of the index's pulls.
func mergePulls(recs []pullRecord, idx []cluster.Pull) []pullRecord {
	for _, p := range idx {
		found := false
		for i := range recs {
			if recs[i].Ref == p.Ref {
				found = true
				if p.At.After(recs[i].at) {
					recs[i].at = p.At
				}
			}
		}
		if !found {
			recs = append(recs, pullRecord{Ref: p.Ref, at: p.At})
		}
	}
	return recs
}
