package expiry

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/reference"

	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
)

// stallingDriver takes stall to delete a repository's link: a sweeper
// paused (SIGSTOP, a long GC) inside one digest's removal.
type stallingDriver struct {
	storagedriver.StorageDriver
	stall atomic.Int64 // nanoseconds
}

func (d *stallingDriver) Delete(ctx context.Context, path string) error {
	if strings.Contains(path, "/_layers/") {
		time.Sleep(time.Duration(d.stall.Load()))
	}
	return d.StorageDriver.Delete(ctx, path)
}

// TestRemovalStopsWhenItsClaimLapses: a removal that took half the
// lifetime of its in-use claim (Cluster.RemovalTTL: leasettl with Redis),
// here in a stalled unlink, deletes nothing more: another replica may hold
// the digest again once the claim lapsed. The data stays for the next
// sweep, which removes it when nothing stalls. Time is synctest's.
func TestRemovalStopsWhenItsClaimLapses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		d := &stallingDriver{StorageDriver: inmemory.New()}
		ns, err := storage.NewRegistry(ctx, d, storage.EnableDelete)
		if err != nil {
			t.Fatal(err)
		}
		st := store.New(ns, d)
		named, _ := reference.WithName("lib/a")
		repo, err := st.Repository(ctx, ident.Of(named))
		if err != nil {
			t.Fatal(err)
		}
		desc, err := repo.Blobs(ctx).Put(ctx, "application/octet-stream", []byte("nobody pulls this"))
		if err != nil {
			t.Fatal(err)
		}
		const ttl = 10 * time.Minute
		e := New(st, ttl, time.Now, quietLogger(), metrics.New(nil), Cluster{RemovalTTL: time.Minute})
		if _, err := e.Sweep(ctx); err != nil { // adopts it as pulled now
			t.Fatal(err)
		}
		time.Sleep(ttl + Interval(ttl) + time.Second)

		d.stall.Store(int64(31 * time.Second)) // past half the claim's minute
		got, err := e.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Removed != 0 {
			t.Fatalf("sweep with a stalled removal: %+v, want nothing removed", got)
		}
		if _, err := st.Stat(ctx, desc.Digest); err != nil {
			t.Fatalf("data deleted after its removal's claim lapsed: %v", err)
		}

		d.stall.Store(int64(29 * time.Second)) // within half of it
		got, err = e.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Removed != 1 {
			t.Fatalf("the next sweep: %+v, want 1 removed", got)
		}
		if _, err := st.Stat(ctx, desc.Digest); err == nil {
			t.Fatal("still stored after the next sweep")
		}
	})
}
