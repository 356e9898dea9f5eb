package main

import (
	"context"
	"path/filepath"
	"time"
)

// A cache may go on working after its client's last byte: content-cache
// stores the window's tail and commits (fsync, rename, link) after it, the
// relay syncs and renames, while distribution's proxy commits before its
// response ends. CPU per byte is read once each has finished, so that the
// work after the response counts for everyone. Waiting looks at the
// storage directory, not at the cache's metrics: a scrape every few
// milliseconds would cost the measured process CPU of its own.

// uploadsGlob matches the uploads in progress of a registry (either
// cache, or the origin) on the filesystem driver: distribution's layout,
// <root>/docker/registry/v2/repositories/<namespace>/<name>/_uploads/<id>
// (the bench's repositories have two path components). "" on another
// storage.
func (b *bench) uploadsGlob(p *proc) string {
	if b.store != nil && p.kind != kindOrigin {
		return ""
	}
	return filepath.Join(p.root, "docker", "registry", "v2", "repositories", "*", "*", "_uploads", "*")
}

// waitNoMatch waits until nothing matches glob, for at most a minute (a
// cache that never finishes shows in its CPU, not as a failed run). On
// other storage (glob ""), content-cache's fills are waited for through
// its metrics instead.
func (b *bench) quiesce(ctx context.Context, p *proc, glob string) {
	if glob == "" {
		if p != nil && p.kind == kindCache {
			if err := waitFillsDone(ctx, b.hc, p); err != nil {
				logf("quiesce: %s: %v", p.name, err)
			}
		}
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if m, err := filepath.Glob(glob); err != nil || len(m) == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			logf("quiesce: uploads still in progress (%s)", glob)
			return
		}
	}
}

// cpuAfterWork is p's CPU time once its uploads in progress are done.
func (b *bench) cpuAfterWork(ctx context.Context, p *proc) time.Duration {
	b.quiesce(ctx, p, b.uploadsGlob(p))
	return cpuOf(p)
}
