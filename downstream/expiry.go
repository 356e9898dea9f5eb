package downstream

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Expiry (blobttl): content that nobody pulled through any cache sharing
// the storage for blobttl is removed, data included. A digest goes only
// when every record of it (one per repository it was pulled through) is
// older than blobttl plus the recording window (pulls.go): records are
// rewritten at most once per window, so a record may lag the last pull by
// up to that much, and nothing is removed before blobttl has passed.

// Sweep statistics, returned by Sweep.
type SweepStats struct {
	Adopted int   // records written for content found without one (first sweep only)
	Kept    int   // digests pulled within blobttl
	Busy    int   // expired digests skipped because they are being filled or served
	Removed int   // digests removed
	Bytes   int64 // bytes of blob data removed
}

// sweepInterval is how often the sweeper runs: a tenth of blobttl, within
// [1s, 1h]. It bounds how long expired content outlives blobttl.
func sweepInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/10, time.Second), time.Hour)
}

// runSweeper sweeps at once (adopting what it finds), then every interval
// until ctx ends.
func (c *Cache) runSweeper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := c.Sweep(ctx); err != nil && ctx.Err() == nil {
			c.log.WithError(err).Warn("expiry sweep failed; retrying at the next one")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep removes the content nobody pulled for blobttl. The first sweep of
// an instance first adopts what it finds in storage without a record, as
// if pulled now. Without blobttl it does nothing. Sweeps run one at a time;
// the cache runs them itself unless Options.ManualSweep is set.
func (c *Cache) Sweep(ctx context.Context) (SweepStats, error) {
	var st SweepStats
	if c.pulls == nil {
		return st, nil
	}
	c.sweepMu.Lock()
	defer c.sweepMu.Unlock()
	if !c.adopted {
		n, err := c.adopt(ctx)
		st.Adopted = n
		if err != nil {
			return st, fmt.Errorf("adopting stored content: %w", err)
		}
		c.adopted = true
		if n > 0 {
			c.log.WithField("records", n).Info("expiry: adopted stored content without pull records, as pulled now")
		}
	}
	records, err := c.pulls.all(ctx)
	if err != nil {
		return st, fmt.Errorf("reading pull records: %w", err)
	}
	limit := c.cfg.BlobTTL + c.pulls.window
	for dgst, recs := range records {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		if !expired(recs, c.now(), limit) {
			st.Kept++
			continue
		}
		if !c.inUse.beginRemoval(dgst) {
			st.Busy++
			continue
		}
		removed, bytes, err := c.remove(ctx, dgst, limit)
		c.inUse.endRemoval(dgst)
		switch {
		case err != nil:
			c.log.WithError(err).WithField("digest", dgst).Warn("expiry: cannot remove; retrying at the next sweep")
		case removed:
			st.Removed++
			st.Bytes += bytes
		default:
			st.Kept++
		}
	}
	c.pulls.prune(limit)
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
func (c *Cache) remove(ctx context.Context, dgst digest.Digest, limit time.Duration) (removed bool, bytes int64, err error) {
	recs, err := c.pulls.of(ctx, dgst)
	if err != nil {
		return false, 0, err
	}
	last := time.Time{}
	for _, r := range recs {
		if r.at.After(last) {
			last = r.at
		}
	}
	if !expired(recs, c.now(), limit) {
		return false, 0, nil
	}
	if desc, err := c.local.BlobStatter().Stat(ctx, dgst); err == nil {
		bytes = desc.Size
	}
	var repos []string
	for _, r := range recs {
		if r.kind == kindData {
			continue
		}
		if err := c.unlink(ctx, r.pullKey); err != nil {
			return false, 0, fmt.Errorf("unlinking from %s: %w", r.repo, err)
		}
		repos = append(repos, r.repo)
	}
	if err := storage.NewVacuum(ctx, c.driver).RemoveBlob(dgst.String()); err != nil && !isNotFound(err) {
		return false, 0, fmt.Errorf("removing data: %w", err)
	}
	if err := c.driver.Delete(ctx, digestRecordsDir(dgst)); err != nil && !isNotFound(err) {
		return false, 0, fmt.Errorf("removing pull records: %w", err)
	}
	c.pulls.forget(dgst)
	c.metrics.Evicted(bytes)
	slices.Sort(repos)
	c.log.WithFields(map[string]any{
		"digest": dgst, "bytes": bytes, "repositories": slices.Compact(repos),
		"last_pull": last.UTC().Format(time.RFC3339), "blobttl": config.ShortDuration(c.cfg.BlobTTL),
	}).Info("expiry: removed content nobody pulled for blobttl")
	return true, bytes, nil
}

// unlink removes one repository's link to a digest, through distribution
// (which also clears its descriptor cache), or straight from the driver
// when distribution cannot see it (a link whose data is already gone).
func (c *Cache) unlink(ctx context.Context, k pullKey) error {
	named, err := reference.WithName(k.repo)
	if err != nil {
		return err
	}
	repo, err := c.local.Repository(ctx, named)
	if err != nil {
		return err
	}
	if k.kind == kindManifest {
		var ms distribution.ManifestService
		if ms, err = repo.Manifests(ctx); err == nil {
			err = ms.Delete(ctx, k.dgst)
		}
	} else {
		err = repo.Blobs(ctx).Delete(ctx, k.dgst)
	}
	if err == nil || !errors.Is(err, distribution.ErrBlobUnknown) {
		return err
	}
	if err := c.driver.Delete(ctx, linkDir(k.repo, k.dgst, k.kind)); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// adopt writes a record, as pulled now, for every link and every blob
// found in storage without one: content stored before expiry was enabled,
// or by a cache that died before recording it. It walks distribution's
// tree itself: distribution's repository enumeration skips repositories
// without manifests, which a cache has whenever clients fetch blobs alone.
func (c *Cache) adopt(ctx context.Context) (int, error) {
	now := c.now()
	n := 0
	add := func(k pullKey) error {
		wrote, err := c.pulls.adopt(ctx, k, now)
		if wrote {
			n++
		}
		return err
	}
	err := c.driver.Walk(ctx, repositoriesRoot, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			base, parent := path.Base(fi.Path()), path.Base(path.Dir(fi.Path()))
			if base == "_uploads" || (base == "tags" && parent == "_manifests") {
				return storagedriver.ErrSkipDir
			}
			return nil
		}
		if k, ok := parseLinkPath(fi.Path()); ok {
			return add(k)
		}
		return nil
	})
	if err != nil && !isNotFound(err) {
		return n, err
	}
	err = c.local.Blobs().Enumerate(ctx, func(d digest.Digest) error {
		has, err := c.pulls.hasAny(ctx, d)
		if err != nil || has {
			return err
		}
		return add(pullKey{dgst: d, kind: kindData})
	})
	if err != nil && !isNotFound(err) {
		return n, err
	}
	return n, nil
}
