package downstream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// The same suite on every storage driver distribution ships. Object stores
// run as real API servers the test starts (versitygw for s3, Azurite for
// azure, fake-gcs-server for gcs); a missing server binary skips its
// driver, unless CI is set.

// storageBackends are the drivers, each making a fresh, empty storage.
var storageBackends = []struct {
	name string
	new  func(testing.TB) regtest.Storage
}{
	{"filesystem", regtest.Filesystem},
	{"inmemory", func(testing.TB) regtest.Storage { return regtest.Inmemory() }},
	{"s3", regtest.StartS3},
	{"azure", regtest.StartAzure},
	{"gcs", regtest.StartGCS},
}

// forEachStorage runs test on a fresh storage of every driver.
func forEachStorage(t *testing.T, test func(t *testing.T, st regtest.Storage)) {
	for _, b := range storageBackends {
		t.Run(b.name, func(t *testing.T) { test(t, b.new(t)) })
	}
}

// driverLayer is larger than a part of the s3 driver (5 MiB in the
// tests) and than an azure append (4 MiB), so that a fill spans several
// parts and ends with a short one.
const driverLayer = 6 << 20

// storedFiles lists every object in the storage with its size, through a
// driver instance: the test's own on shared storage, the cache's on
// inmemory.
func storedFiles(t *testing.T, st regtest.Storage, cache *regtest.Server) map[string]int64 {
	t.Helper()
	d := cache.Cache.Driver()
	if st.Shared {
		d = st.NewDriver(t)
	}
	files := map[string]int64{}
	// Everything the cache writes is under these (the gcs driver lists
	// nothing at "/" on fake-gcs-server).
	for _, root := range []string{"/docker", "/content-cache"} {
		err := d.Walk(t.Context(), root, func(fi storagedriver.FileInfo) error {
			if !fi.IsDir() {
				files[fi.Path()] = fi.Size()
			}
			return nil
		})
		var nf storagedriver.PathNotFoundError
		if err != nil && !errors.As(err, &nf) {
			t.Fatalf("listing the storage under %s: %v", root, err)
		}
	}
	return files
}

// blobFileBytes sums the blob data in a listing of storedFiles.
func blobFileBytes(files map[string]int64) int64 {
	var n int64
	for p, size := range files {
		if strings.HasPrefix(p, "/docker/registry/v2/blobs/") {
			n += size
		}
	}
	return n
}

// serverBytes sums the files the object store's server keeps for the
// bucket on disk, its unfinished multipart uploads included; -1 when the
// server keeps none there.
func serverBytes(t *testing.T, st regtest.Storage) int64 {
	t.Helper()
	if st.Server == nil || st.Server.Dir == "" {
		return -1
	}
	var n int64
	err := filepath.WalkDir(st.Server.Dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return n
}

// blobGETs counts the origin's GETs of every blob of img.
func blobGETs(origin *regtest.Server, img regtest.Image) int {
	n := 0
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		n += origin.Counts.Get(http.MethodGet, "/v2/"+img.Repo+"/blobs/"+digest.FromBytes(b).String())
	}
	return n
}

// fillsDone waits until the cache has no fill in flight: a fill commits
// to storage after its clients received their last byte.
func fillsDone(t *testing.T, s *regtest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := s.WaitFillsDone(ctx); err != nil {
		t.Fatalf("fills still in flight: %v", err)
	}
}

// storageLogs captures the cache's log for the warning the commit bug gave.
func storageLogs(extra map[string]any, opts downstream.Options) *regtest.Buffer {
	logs := &regtest.Buffer{}
	l := logrus.New()
	l.SetOutput(logs)
	opts.Logger = logrus.NewEntry(l)
	downstream.SetOptions(extra, opts)
	return logs
}

func noStoreWarning(t *testing.T, logs *regtest.Buffer) {
	t.Helper()
	if strings.Contains(logs.String(), "cannot store blob locally") {
		t.Fatalf("the cache could not store a blob:\n%s", logs.String())
	}
}

func TestStorageColdWarm(t *testing.T) {
	forEachStorage(t, func(t *testing.T, st regtest.Storage) {
		origin := regtest.StartOrigin(t, nil)
		img := regtest.RandomImage(131, 2, driverLayer)
		pushImage(t, origin, img)
		extra := map[string]any{}
		logs := storageLogs(extra, downstream.Options{})
		cache := regtest.StartCacheOn(t, st, origin.URL, extra)
		c := &regtest.Client{Base: cache.URL}

		pullImage(t, c, img)
		if n, want := blobGETs(origin, img), 1+len(img.Layers); n != want {
			t.Fatalf("cold pull: origin saw %d blob GETs, want %d", n, want)
		}
		fillsDone(t, cache)
		noStoreWarning(t, logs)
		var want int64 = int64(len(img.Config))
		for _, l := range img.Layers {
			want += int64(len(l))
		}
		if got := blobFileBytes(storedFiles(t, st, cache)); got != want+int64(len(img.Manifest)) {
			t.Fatalf("storage holds %d bytes of blob data, want %d (layers, config and manifest)", got, want+int64(len(img.Manifest)))
		}

		// The cold pull read the manifest with its tag's GET; the warm
		// one resolves the tag with a HEAD and serves the manifest held.
		tagGets := origin.Counts.Get(http.MethodGet, manifestPath(img, img.Tag))
		pullImage(t, c, img)
		if n, want := blobGETs(origin, img), 1+len(img.Layers); n != want {
			t.Fatalf("warm pull: origin saw %d blob GETs in all, want still %d (hits)", n, want)
		}
		if n := origin.Counts.Get(http.MethodGet, manifestPath(img, img.Tag)); n != tagGets || n == 0 {
			t.Fatalf("origin saw %d GETs of the tag, want the cold pull's %d (> 0) only", n, tagGets)
		}
		if n := origin.Counts.Get(http.MethodGet, manifestPath(img, img.Digest.String())); n != 0 {
			t.Fatalf("origin saw %d GETs of the manifest by digest, want 0", n)
		}
	})
}

func TestStorageConcurrentMisses(t *testing.T) {
	forEachStorage(t, func(t *testing.T, st regtest.Storage) {
		fake, srv := newFakeUpstream(t, "slow", driverLayer)
		extra := map[string]any{}
		logs := storageLogs(extra, downstream.Options{})
		cache := regtest.StartCacheOn(t, st, srv.URL, extra)
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		t.Cleanup(client.CloseIdleConnections)
		url := cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String()

		const n = 32
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := blobGETWith(t.Context(), client, url)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, fake.blob) {
					errs <- errors.New("a waiter did not get the blob")
				}
			}()
		}
		// Every client is being served (the upstream holds back half of
		// the blob) before the rest is let through.
		if err := cache.WaitInFlight(t.Context(), n); err != nil {
			t.Fatal(err)
		}
		fake.unblock()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := fake.gets.Load(); got != 1 {
			t.Fatalf("%d concurrent misses made %d upstream GETs, want 1", n, got)
		}
		fillsDone(t, cache)
		// Stored: one more GET is a hit.
		resp, err := blobGETWith(t.Context(), client, url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(body, fake.blob) || fake.gets.Load() != 1 {
			t.Fatalf("after the fill: %d bytes, %d upstream GETs; want the blob from storage", len(body), fake.gets.Load())
		}
		noStoreWarning(t, logs)
	})
}

func TestStorageFaultyUpstreamLeavesNothing(t *testing.T) {
	for _, mode := range []string{"wrong", "short"} {
		t.Run(mode, func(t *testing.T) {
			forEachStorage(t, func(t *testing.T, st regtest.Storage) {
				fake, srv := newFakeUpstream(t, mode, driverLayer)
				cache := regtest.StartCacheOn(t, st, srv.URL, nil)
				client := &http.Client{Transport: &http.Transport{}}
				t.Cleanup(client.CloseIdleConnections)
				resp, err := blobGETWith(t.Context(), client, cache.URL+"/v2/test/blob/blobs/"+fake.dgst.String())
				if err != nil {
					t.Fatal(err)
				}
				got, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if rerr == nil && resp.StatusCode == http.StatusOK && len(got) == len(fake.blob) {
					t.Fatalf("a complete-looking body from a faulty upstream")
				}
				idle(t, cache)
				_ = cache.Cache.Close() // waits for the fill to clean up
				if files := storedFiles(t, st, cache); len(files) > 0 {
					t.Fatalf("a failed fill left objects in the storage: %v", files)
				}
				if n := serverBytes(t, st); n > 0 {
					t.Fatalf("a failed fill left %d bytes on the object store's disk (%s)", n, st.Server.Dir)
				}
			})
		})
	}
}

func TestStorageExpiryFreesBytes(t *testing.T) {
	forEachStorage(t, func(t *testing.T, st regtest.Storage) {
		origin := regtest.StartOrigin(t, nil)
		img := regtest.RandomImage(132, 1, driverLayer)
		pushImage(t, origin, img)
		clock := &regtest.Clock{}
		extra := map[string]any{"blobttl": "1h"}
		logs := storageLogs(extra, downstream.Options{Now: clock.Now, ManualSweep: true})
		cache := regtest.StartCacheOn(t, st, origin.URL, extra)
		path, dgst := layerAt(img, 0)
		pull(t, cache, path, dgst)
		fillsDone(t, cache)
		noStoreWarning(t, logs)
		before := blobFileBytes(storedFiles(t, st, cache))
		if before < driverLayer {
			t.Fatalf("storage holds %d bytes of blob data after the pull, want at least %d", before, driverLayer)
		}
		diskBefore := serverBytes(t, st)

		clock.Advance(2 * time.Hour)
		sweep(t, cache, downstream.SweepStats{Removed: 1, Bytes: driverLayer})
		if after := blobFileBytes(storedFiles(t, st, cache)); after != 0 {
			t.Fatalf("storage holds %d bytes of blob data after expiry, want 0", after)
		}
		if diskBefore >= 0 {
			if diskAfter := serverBytes(t, st); diskBefore-diskAfter < driverLayer {
				t.Fatalf("the object store's disk went from %d to %d bytes, want %d fewer", diskBefore, diskAfter, driverLayer)
			}
		}
		pull(t, cache, path, dgst)
		if n := origin.Counts.Get(http.MethodGet, path); n != 2 {
			t.Fatalf("origin saw %d GETs of the expired layer, want 2", n)
		}
	})
}

func TestStorageRestartKeepsContent(t *testing.T) {
	forEachStorage(t, func(t *testing.T, st regtest.Storage) {
		if !st.Shared {
			t.Skip("inmemory storage lives and dies with its instance")
		}
		origin := regtest.StartOrigin(t, nil)
		img := regtest.RandomImage(133, 1, driverLayer)
		pushImage(t, origin, img)
		first := regtest.StartCacheOn(t, st, origin.URL, nil)
		pullImage(t, &regtest.Client{Base: first.URL}, img)
		fillsDone(t, first)
		first.Kill()
		_ = first.Cache.Close()

		second := regtest.StartCacheOn(t, st, origin.URL, nil)
		pullImage(t, &regtest.Client{Base: second.URL}, img)
		if n, want := blobGETs(origin, img), 1+len(img.Layers); n != want {
			t.Fatalf("after a restart: origin saw %d blob GETs in all, want still %d", n, want)
		}
	})
}

func TestStorageSharedPullRecords(t *testing.T) {
	forEachStorage(t, func(t *testing.T, st regtest.Storage) {
		if !st.Shared {
			t.Skip("inmemory storage cannot be shared")
		}
		origin := regtest.StartOrigin(t, nil)
		img := regtest.RandomImage(134, 1, 1<<20)
		pushImage(t, origin, img)
		clock := &regtest.Clock{}
		start := func() *regtest.Server {
			extra := map[string]any{"blobttl": "1h"}
			downstream.SetOptions(extra, downstream.Options{Now: clock.Now, ManualSweep: true})
			return regtest.StartCacheOn(t, st, origin.URL, extra)
		}
		a, b := start(), start()
		path, dgst := layerAt(img, 0)
		pull(t, a, path, dgst)
		fillsDone(t, a)
		// Both caches adopt nothing: the record is there already.
		sweep(t, a, downstream.SweepStats{Kept: 1})
		sweep(t, b, downstream.SweepStats{Kept: 1})

		clock.Advance(50 * time.Minute)
		pull(t, b, path, dgst) // a hit at b: a stored it
		if n := origin.Counts.Get(http.MethodGet, path); n != 1 {
			t.Fatalf("origin saw %d GETs of the layer, want 1 (b serves what a stored)", n)
		}
		idle(t, b)
		// An hour after a's pull, a would expire the layer on its own
		// record; b's pull, read from the shared storage, keeps it.
		clock.Advance(30 * time.Minute)
		sweep(t, a, downstream.SweepStats{Kept: 1})
		clock.Advance(time.Hour)
		sweep(t, a, downstream.SweepStats{Removed: 1, Bytes: 1 << 20})
		if n := blobFileBytes(storedFiles(t, st, a)); n != 0 {
			t.Fatalf("storage holds %d bytes of blob data after expiry, want 0", n)
		}
	})
}
