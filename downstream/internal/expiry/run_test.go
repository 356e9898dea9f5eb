package expiry

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/reference"

	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
)

// The sweeper runs on its own schedule (a tenth of blobttl): content
// pulled once goes after blobttl plus the recording window and a sweep
// interval, and not before blobttl. Time is synctest's: the sweeper's
// ticker and the records' clock are the same fake clock.
func TestRunSweepsOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		driver := inmemory.New()
		ns, err := storage.NewRegistry(ctx, driver, storage.EnableDelete)
		if err != nil {
			t.Fatal(err)
		}
		st := store.New(ns, driver)
		named, _ := reference.WithName("lib/a")
		repo, err := st.Repository(ctx, ident.Of(named))
		if err != nil {
			t.Fatal(err)
		}
		desc, err := repo.Blobs(ctx).Put(ctx, "application/octet-stream", []byte("pulled once"))
		if err != nil {
			t.Fatal(err)
		}
		const ttl = 10 * time.Minute // window and interval: 1m
		e := New(st, ttl, time.Now, quietLogger(), metrics.New(nil), Cluster{})
		e.Record(ctx, store.Ref{Digest: desc.Digest, Repo: "lib/a", Kind: store.KindLayer})
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.Run(ctx)
		}()
		stored := func() bool {
			_, err := st.Stat(ctx, desc.Digest)
			return err == nil
		}
		time.Sleep(ttl) // the fake clock: blobttl since the pull
		synctest.Wait()
		if !stored() {
			t.Fatal("removed before blobttl had passed")
		}
		time.Sleep(ttl/10 + Interval(ttl) + time.Second)
		synctest.Wait()
		if stored() {
			t.Fatal("still stored a window and a sweep interval after blobttl")
		}
		cancel()
		<-done
	})
}
