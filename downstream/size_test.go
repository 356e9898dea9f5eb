package downstream_test

import (
	"bytes"
	"context"
	"math/rand"
	"net/http"
	"strconv"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// sizeBlob is the size of each layer in the size bound's tests.
const sizeBlob = 64 << 10

// boundedCache starts a cache with the size bound over st, on clock,
// evicting only when the test says so.
func boundedCache(t *testing.T, st regtest.Storage, origin string, clock *regtest.Clock, extra map[string]any, logs *regtest.Buffer) *regtest.Server {
	t.Helper()
	l := logrus.New()
	l.SetOutput(logs)
	downstream.SetOptions(extra, downstream.Options{Now: clock.Now, ManualSweep: true, Logger: logrus.NewEntry(l)})
	return regtest.StartCacheOn(t, st, origin, extra)
}

// randomLayer is n random bytes from seed.
func randomLayer(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// dataExists reports whether the storage holds dgst's data.
func dataExists(t *testing.T, d storagedriver.StorageDriver, dgst digest.Digest) bool {
	t.Helper()
	_, err := d.Stat(t.Context(), "/docker/registry/v2/blobs/"+string(dgst.Algorithm())+"/"+dgst.Encoded()[:2]+"/"+dgst.Encoded()+"/data")
	return err == nil
}

// TestSizeBound: past maxsize, content goes by least recent pull down to
// the low watermark, on the filesystem and on S3 (versitygw): a blob
// shared by two repositories stays while one of them pulled it recently,
// even though the other pulled it long ago; a pinned repository's blob
// stays however old its pull; what went is fetched again on the next pull.
// The stored bytes are known from the index, rebuilt from storage by a
// cache started later on the same storage; evictions are logged and
// counted by reason.
func TestSizeBound(t *testing.T) {
	for _, b := range []struct {
		name string
		new  func(testing.TB) regtest.Storage
	}{{"filesystem", regtest.Filesystem}, {"s3", regtest.StartS3}} {
		t.Run(b.name, func(t *testing.T) { testSizeBound(t, b.new(t)) })
	}
}

func testSizeBound(t *testing.T, st regtest.Storage) {
	origin := regtest.StartOrigin(t, nil)
	layer := func(seed int64) []byte { return randomLayer(seed, sizeBlob) }
	shared := layer(100)
	a := regtest.WithLayers(regtest.Image{Repo: "team/a", Tag: "v1"}, [][]byte{layer(1), shared, layer(2)})
	bImg := regtest.WithLayers(regtest.Image{Repo: "team/b", Tag: "v1"}, [][]byte{layer(3), shared})
	pinned := regtest.WithLayers(regtest.Image{Repo: "base/img", Tag: "v1"}, [][]byte{layer(4)})
	for _, img := range []regtest.Image{a, bImg, pinned} {
		pushImage(t, origin, img)
	}
	clock := &regtest.Clock{}
	logs := &regtest.Buffer{}
	// 4.5 layers; down to 60%: 2.7 layers.
	extra := map[string]any{"maxsize": strconv.Itoa(sizeBlob*9/2) + "B", "lowwatermark": "60%", "pin": []any{"base/*"}}
	cache := boundedCache(t, st, origin.URL, clock, extra, logs)
	driver := cache.Cache.Driver()
	if st.Shared {
		driver = st.NewDriver(t)
	}

	step := func(img regtest.Image, i int) digest.Digest {
		t.Helper()
		p, d := layerAt(img, i)
		pull(t, cache, p, d)
		clock.Advance(time.Minute)
		return d
	}
	pd := step(pinned, 0) // the oldest pull, but pinned
	a0 := step(a, 0)
	step(a, 1) // the shared layer, through team/a: long ago
	a2 := step(a, 2)
	b0 := step(bImg, 0)
	sd := step(bImg, 1) // the shared layer again, through team/b: the latest pull
	idle(t, cache)

	got, err := cache.Cache.EnforceSize(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := downstream.SizeStats{Stored: 2 * sizeBlob, Removed: 3, Bytes: 3 * sizeBlob, Pinned: 1}
	if got != want {
		t.Fatalf("EnforceSize = %+v; want %+v", got, want)
	}
	for d, keep := range map[digest.Digest]bool{pd: true, sd: true, a0: false, a2: false, b0: false} {
		if dataExists(t, driver, d) != keep {
			t.Errorf("%s: stored %v; want %v", d, !keep, keep)
		}
	}
	all := scrape(t, cache.Cache.Gatherer())
	for k, v := range map[string]float64{
		`content_cache_evictions_total{reason="size"}`:     3,
		`content_cache_evicted_bytes_total{reason="size"}`: 3 * sizeBlob,
		`content_cache_evictions_total{reason="ttl"}`:      0,
		`content_cache_stored_bytes`:                       2 * sizeBlob,
		`content_cache_max_size_bytes`:                     sizeBlob * 9 / 2,
	} {
		if all[k] != v {
			t.Errorf("%s = %v; want %v", k, all[k], v)
		}
	}
	if _, err := logs.WaitFor(t.Context(), "size bound: removed the least recently pulled content", a0.String(), "reason=size"); err != nil {
		t.Errorf("no log line for the eviction of %s: %v", a0, err)
	}
	// Below maxsize: nothing more goes.
	if got, err := cache.Cache.EnforceSize(t.Context()); err != nil || got.Removed != 0 {
		t.Errorf("a second pass = %+v, %v; want nothing removed", got, err)
	}
	// The shared layer is still served through both repositories.
	for _, img := range []regtest.Image{a, bImg} {
		p, _ := layerAt(img, 1)
		if img.Repo == bImg.Repo {
			p, _ = layerAt(img, 1)
		}
		pull(t, cache, p, sd)
	}

	// A cache started later on the same storage knows the size from
	// storage alone.
	if st.Shared {
		later := boundedCache(t, st, origin.URL, clock, map[string]any{"maxsize": "1GiB"}, &regtest.Buffer{})
		if err := later.Cache.ReconcileSize(t.Context()); err != nil {
			t.Fatal(err)
		}
		var manifests float64 // none pulled: blobs only
		if v := scrape(t, later.Cache.Gatherer())[`content_cache_stored_bytes`]; v != 2*sizeBlob+manifests {
			t.Errorf("a new cache's index: stored_bytes = %v; want %d", v, 2*sizeBlob)
		}
	}
	// What went is fetched again.
	p, _ := layerAt(a, 0)
	pull(t, cache, p, a0)
}

// TestSizeBoundOversizeBlob: a blob larger than maxsize reaches its
// client whole and verified, is logged, and does not stay in storage; it
// is removed only once nobody streams it, and takes nothing else with it.
func TestSizeBoundOversizeBlob(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	small := randomLayer(7, 1000)
	big := randomLayer(8, 16<<20) // more than the slow reader's socket buffers hold
	img := regtest.WithLayers(regtest.Image{Repo: "team/big", Tag: "v1"}, [][]byte{small, big})
	pushImage(t, origin, img)
	clock := &regtest.Clock{}
	logs := &regtest.Buffer{}
	st := regtest.Filesystem(t)
	cache := boundedCache(t, st, origin.URL, clock, map[string]any{"maxsize": "8MiB"}, logs)
	ps, ds := layerAt(img, 0)
	pb, db := layerAt(img, 1)
	pull(t, cache, ps, ds)
	clock.Advance(time.Minute)

	// A client holds the big blob's response open while the bound runs.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, cache.URL+pb, nil)
	resp, err := regtest.SlowReaderClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 1)
	if _, err := resp.Body.Read(head); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := logs.WaitFor(ctx, "blob larger than maxsize", db.String()); err != nil {
		t.Fatalf("not logged: %v", err)
	}
	d := st.NewDriver(t)
	if got, err := cache.Cache.EnforceSize(t.Context()); err != nil || got.Removed != 0 || got.Busy != 1 || !dataExists(t, d, db) {
		t.Fatalf("while a client streams it: EnforceSize = %+v, %v, stored %v; want it kept (busy)", got, err, dataExists(t, d, db))
	}
	rest := new(bytes.Buffer)
	if _, err := rest.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if digest.FromBytes(append(head, rest.Bytes()...)) != db {
		t.Fatal("the oversize blob reached its client damaged")
	}
	idle(t, cache)
	got, err := cache.Cache.EnforceSize(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got.Removed != 1 || got.Bytes != int64(len(big)) || got.Stored != int64(len(small)) {
		t.Fatalf("EnforceSize = %+v; want the big blob alone removed", got)
	}
	if dataExists(t, d, db) || !dataExists(t, d, ds) {
		t.Fatalf("after the bound: big stored %v (want false), small stored %v (want true)", dataExists(t, d, db), dataExists(t, d, ds))
	}
}

// TestSizeBoundRunsByItself: without manual sweeps, a store that passes
// maxsize evicts by itself.
func TestSizeBoundRunsByItself(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	img := regtest.WithLayers(regtest.Image{Repo: "team/auto", Tag: "v1"}, [][]byte{randomLayer(11, sizeBlob), randomLayer(12, sizeBlob), randomLayer(13, sizeBlob)})
	pushImage(t, origin, img)
	cache := regtest.StartCache(t, origin.URL, map[string]any{"maxsize": strconv.Itoa(sizeBlob * 5 / 2)})
	for i := range img.Layers {
		p, d := layerAt(img, i)
		pull(t, cache, p, d)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		all := scrape(t, cache.Cache.Gatherer())
		if all[`content_cache_evictions_total{reason="size"}`] >= 1 && all[`content_cache_stored_bytes`] <= sizeBlob*5/2 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no eviction by itself: %v", all)
		case <-tick.C:
		}
	}
}
