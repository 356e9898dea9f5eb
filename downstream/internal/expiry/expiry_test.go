package expiry

import (
	"bytes"
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/internal/testkit"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/storage"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// countingDriver counts PutContent calls and can be made to fail them.
type countingDriver struct {
	storagedriver.StorageDriver
	puts atomic.Int32
	fail atomic.Bool
}

func (d *countingDriver) PutContent(ctx context.Context, path string, content []byte) error {
	d.puts.Add(1)
	if d.fail.Load() {
		return errors.New("storage unavailable")
	}
	return d.StorageDriver.PutContent(ctx, path, content)
}

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(&bytes.Buffer{})
	return logrus.NewEntry(l)
}

func TestPullRecordsCoalesce(t *testing.T) {
	ctx := t.Context()
	clock := &testkit.Clock{}
	d := &countingDriver{StorageDriver: inmemory.New()}
	p := newPulls(d, 10*time.Minute, clock.Now, quietLogger()) // window: 1m
	k := store.Ref{Digest: digest.FromString("a"), Repo: "lib/a", Kind: store.KindLayer}

	p.record(ctx, k)
	if got := d.puts.Load(); got != 1 {
		t.Fatalf("first pull: %d writes, want 1", got)
	}
	for range 100 {
		clock.Advance(500 * time.Millisecond) // 50s in all: within the window
		p.record(ctx, k)
	}
	if got := d.puts.Load(); got != 1 {
		t.Fatalf("100 pulls within the window: %d writes, want 1", got)
	}
	clock.Advance(10 * time.Second) // 60s since the write
	p.record(ctx, k)
	if got := d.puts.Load(); got != 2 {
		t.Fatalf("pull one window later: %d writes, want 2", got)
	}
	recs, err := p.of(ctx, k.Digest)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records: %v, %v", recs, err)
	}
	if !recs[0].at.Equal(clock.Now()) || recs[0].Ref != k {
		t.Fatalf("record %+v, want %v at %v", recs[0], k, clock.Now())
	}

	// Another repository is another record.
	k2 := store.Ref{Digest: k.Digest, Repo: "lib/b", Kind: store.KindLayer}
	p.record(ctx, k2)
	if got := d.puts.Load(); got != 3 {
		t.Fatalf("other repository: %d writes, want 3", got)
	}

	// A failed write is tried again on the next pull.
	k3 := store.Ref{Digest: digest.FromString("c"), Repo: "lib/c", Kind: store.KindManifest}
	d.fail.Store(true)
	p.record(ctx, k3)
	d.fail.Store(false)
	p.record(ctx, k3)
	if got := d.puts.Load(); got != 5 {
		t.Fatalf("after a failed write: %d writes, want 5", got)
	}
	if recs, _ := p.of(ctx, k3.Digest); len(recs) != 1 {
		t.Fatalf("record after a retried write: %v", recs)
	}
}

func TestPullRecordDamaged(t *testing.T) {
	ctx := t.Context()
	clock := &testkit.Clock{}
	d := inmemory.New()
	p := newPulls(d, time.Hour, clock.Now, quietLogger())
	k := store.Ref{Digest: digest.FromString("x"), Repo: "r", Kind: store.KindLayer}
	if err := d.PutContent(ctx, recordPath(k), []byte("yesterday")); err != nil {
		t.Fatal(err)
	}
	recs, err := p.of(ctx, k.Digest)
	if err != nil || len(recs) != 1 || !recs[0].at.Equal(clock.Now()) {
		t.Fatalf("damaged record read as %v, %v; want one record at now", recs, err)
	}
	b, _ := d.GetContent(ctx, recordPath(k))
	if at, err := time.Parse(time.RFC3339Nano, string(bytes.TrimSpace(b))); err != nil || !at.Equal(clock.Now()) {
		t.Fatalf("damaged record rewritten as %q", b)
	}
}

func TestParseRecordPath(t *testing.T) {
	dgst := digest.FromString("p")
	for _, k := range []store.Ref{
		{Digest: dgst, Repo: "a", Kind: store.KindLayer},
		{Digest: dgst, Repo: "org/team/app", Kind: store.KindManifest},
		{Digest: dgst, Kind: store.KindData},
	} {
		got, ok := parseRecordPath(recordPath(k))
		if !ok || got != k {
			t.Errorf("parseRecordPath(%s) = %v, %v; want %v", recordPath(k), got, ok, k)
		}
	}
	for _, p := range []string{
		"/docker/registry/v2/blobs/sha256/aa/" + dgst.Encoded() + "/data",
		pullsRoot + "/sha256/" + dgst.Encoded() + "/_layer",         // a layer needs a repository
		pullsRoot + "/sha256/" + dgst.Encoded() + "/repo/_data",     // data has none
		pullsRoot + "/sha256/" + dgst.Encoded() + "/repo/_other",    // unknown kind
		pullsRoot + "/sha256/nothex/repo/_layer",                    // bad digest
		pullsRoot + "/md5/" + dgst.Encoded() + "/repo/_layer",       // unknown algorithm
		pullsRoot + "/sha256/" + dgst.Encoded()[:10] + "/r/_layer",  // short digest
		pullsRoot + "/sha256/" + dgst.Encoded() + "/r/_layer/extra", // not a record
	} {
		if k, ok := parseRecordPath(p); ok {
			t.Errorf("parseRecordPath(%s) = %v; want not a record", p, k)
		}
	}
}

func TestParseLinkPath(t *testing.T) {
	dgst := digest.FromString("l")
	for p, want := range map[string]store.Ref{
		store.RepositoriesRoot + "/a/_layers/sha256/" + dgst.Encoded() + "/link":                        {Digest: dgst, Repo: "a", Kind: store.KindLayer},
		store.RepositoriesRoot + "/org/tags/_layers/sha256/" + dgst.Encoded() + "/link":                 {Digest: dgst, Repo: "org/tags", Kind: store.KindLayer},
		store.RepositoriesRoot + "/org/app/_manifests/revisions/sha256/" + dgst.Encoded() + "/link":     {Digest: dgst, Repo: "org/app", Kind: store.KindManifest},
		store.RepositoriesRoot + "/app/_manifests/tags/latest/index/sha256/" + dgst.Encoded() + "/link": {},
		store.RepositoriesRoot + "/app/_manifests/tags/latest/current/link":                             {},
		store.RepositoriesRoot + "/app/_uploads/some-uuid/startedat":                                    {},
		store.RepositoriesRoot + "/app/_layers/sha256/nothex/link":                                      {},
		"/docker/registry/v2/blobs/sha256/aa/" + dgst.Encoded() + "/data":                               {},
	} {
		got, ok := store.ParseLinkPath(p)
		if ok != (want != store.Ref{}) || got != want {
			t.Errorf("store.ParseLinkPath(%s) = %v, %v; want %v", p, got, ok, want)
		}
	}
}

func TestExpired(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	rec := func(ago time.Duration) pullRecord { return pullRecord{at: now.Add(-ago)} }
	limit := time.Hour
	for _, tc := range []struct {
		name string
		recs []pullRecord
		want bool
	}{
		{"no record", nil, false},
		{"exactly at the limit", []pullRecord{rec(time.Hour)}, false},
		{"past the limit", []pullRecord{rec(time.Hour + time.Nanosecond)}, true},
		{"one repository still pulls", []pullRecord{rec(2 * time.Hour), rec(time.Minute)}, false},
		{"none pulls", []pullRecord{rec(2 * time.Hour), rec(3 * time.Hour)}, true},
	} {
		if got := expired(tc.recs, now, limit); got != tc.want {
			t.Errorf("%s: expired = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSweepInterval(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{
		2 * time.Second: time.Second,
		5 * time.Minute: 30 * time.Second,
		24 * time.Hour:  time.Hour,
	} {
		if got := Interval(ttl); got != want {
			t.Errorf("Interval(%s) = %s, want %s", ttl, got, want)
		}
	}
}

// sweepFixture is expiry over an in-memory storage, swept by hand.
type sweepFixture struct {
	t      *testing.T
	ctx    context.Context
	driver storagedriver.StorageDriver
	ns     distribution.Namespace
	clock  *testkit.Clock
	st     *store.Store
	c      *Expiry
}

func newSweepFixture(t *testing.T, ttl time.Duration) *sweepFixture {
	ctx := t.Context()
	f := &sweepFixture{t: t, ctx: ctx, driver: inmemory.New(), clock: &testkit.Clock{}}
	var err error
	f.ns, err = storage.NewRegistry(ctx, f.driver, storage.EnableDelete)
	if err != nil {
		t.Fatal(err)
	}
	f.st = store.New(f.ns, f.driver)
	f.c = f.newCache(ttl)
	return f
}

// newCache is the expiry of another instance over the same storage.
func (f *sweepFixture) newCache(ttl time.Duration) *Expiry {
	return New(f.st, ttl, f.clock.Now, quietLogger(), metrics.New(nil), Cluster{})
}

// put stores data as a blob linked into repo.
func (f *sweepFixture) put(repo string, data []byte) digest.Digest {
	f.t.Helper()
	r := f.repo(repo)
	bw, err := r.Blobs(f.ctx).Create(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := bw.Write(data); err != nil {
		f.t.Fatal(err)
	}
	dgst := digest.FromBytes(data)
	if _, err := bw.Commit(f.ctx, v1.Descriptor{Digest: dgst, Size: int64(len(data))}); err != nil {
		f.t.Fatal(err)
	}
	return dgst
}

func (f *sweepFixture) repo(name string) distribution.Repository {
	f.t.Helper()
	named, err := reference.WithName(name)
	if err != nil {
		f.t.Fatal(err)
	}
	r, err := f.ns.Repository(f.ctx, named)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *sweepFixture) sweep(want SweepStats) {
	f.t.Helper()
	got, err := f.c.Sweep(f.ctx)
	if err != nil {
		f.t.Fatalf("sweep: %v", err)
	}
	if got != want {
		f.t.Fatalf("sweep = %+v, want %+v", got, want)
	}
}

// stored reports whether dgst's data exists and whether repo links it.
func (f *sweepFixture) stored(repo string, dgst digest.Digest) (data, linked bool) {
	_, err := f.ns.BlobStatter().Stat(f.ctx, dgst)
	data = err == nil
	_, err = f.driver.Stat(f.ctx, store.RepositoriesRoot+"/"+repo+"/_layers/sha256/"+dgst.Encoded()+"/link")
	return data, err == nil
}

func TestSweep(t *testing.T) {
	const ttl = 10 * time.Minute // window 1m: removal past 11m
	f := newSweepFixture(t, ttl)
	shared, only, orphan := []byte("shared by a and b"), []byte("only in a"), []byte("data without a link")
	x := f.put("a", shared)
	f.put("b", shared)
	y := f.put("a", only)
	z := f.put("c", orphan)
	if err := f.driver.Delete(f.ctx, store.RepositoriesRoot+"/c"); err != nil {
		t.Fatal(err)
	}

	// First sweep: everything is adopted as pulled now, nothing goes.
	f.sweep(SweepStats{Adopted: 4, Kept: 3})
	f.sweep(SweepStats{Kept: 3})

	// Only a keeps pulling x.
	f.clock.Advance(5 * time.Minute)
	f.c.pulls.record(f.ctx, store.Ref{Digest: x, Repo: "a", Kind: store.KindLayer})
	f.clock.Advance(6*time.Minute + time.Second)
	f.sweep(SweepStats{Kept: 1, Removed: 2, Bytes: int64(len(only) + len(orphan))})
	for _, c := range []struct {
		repo       string
		dgst       digest.Digest
		data, link bool
	}{
		{"a", x, true, true}, {"b", x, true, true}, // a pulled it: b keeps its link too
		{"a", y, false, false}, {"c", z, false, false},
	} {
		if data, link := f.stored(c.repo, c.dgst); data != c.data || link != c.link {
			t.Errorf("%s@%s: data %v link %v, want %v %v", c.repo, c.dgst, data, link, c.data, c.link)
		}
	}

	// In use: skipped, then removed once released.
	f.clock.Advance(6 * time.Minute)
	release, err := f.c.inUse.Hold(f.ctx, x)
	if err != nil {
		t.Fatal(err)
	}
	f.sweep(SweepStats{Busy: 1})
	release()
	f.sweep(SweepStats{Removed: 1, Bytes: int64(len(shared))})
	for _, repo := range []string{"a", "b"} {
		if data, link := f.stored(repo, x); data || link {
			t.Errorf("%s@%s after expiry: data %v link %v", repo, x, data, link)
		}
	}
	if _, err := f.driver.Stat(f.ctx, digestRecordsDir(x)); !store.IsNotFound(err) {
		t.Errorf("records of %s after expiry: %v", x, err)
	}
	f.sweep(SweepStats{})
}

func TestSweepRereadsRecords(t *testing.T) {
	const ttl = 10 * time.Minute
	f := newSweepFixture(t, ttl)
	x := f.put("a", []byte("pulled by another replica"))
	f.sweep(SweepStats{Adopted: 1, Kept: 1})
	f.clock.Advance(20 * time.Minute)
	// Another cache on the same storage pulls it after this one's sweep
	// read the records, before it removes anything.
	other := newPulls(f.driver, ttl, f.clock.Now, quietLogger())
	other.record(f.ctx, store.Ref{Digest: x, Repo: "b", Kind: store.KindLayer})
	removed, _, err := f.c.remove(f.ctx, x, ttl+ttl/10)
	if err != nil || removed {
		t.Fatalf("remove after another pull: removed %v, %v", removed, err)
	}
	if data, link := f.stored("a", x); !data || !link {
		t.Fatalf("data %v link %v after another replica's pull", data, link)
	}
}

func TestSweepDanglingLink(t *testing.T) {
	// Data already gone (another replica, a crash): the link still goes.
	f := newSweepFixture(t, time.Minute)
	x := f.put("a", []byte("dangling"))
	f.sweep(SweepStats{Adopted: 1, Kept: 1})
	if err := storage.NewVacuum(f.ctx, f.driver).RemoveBlob(x.String()); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Minute)
	f.sweep(SweepStats{Removed: 1})
	if _, link := f.stored("a", x); link {
		t.Fatal("dangling link left behind")
	}
}

func TestSweepManifest(t *testing.T) {
	f := newSweepFixture(t, time.Minute)
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + digest.FromString("{}").String() + `","size":2},"layers":[]}`)
	m, _, err := distribution.UnmarshalManifest(v1.MediaTypeImageManifest, body)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := f.repo("app").Manifests(f.ctx, storage.SkipLayerVerification())
	if err != nil {
		t.Fatal(err)
	}
	dgst, err := ms.Put(f.ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	f.sweep(SweepStats{Adopted: 1, Kept: 1})
	f.clock.Advance(2 * time.Minute)
	f.sweep(SweepStats{Removed: 1, Bytes: int64(len(body))})
	if ok, err := ms.Exists(f.ctx, dgst); ok || err != nil {
		t.Fatalf("manifest after expiry: exists %v, %v", ok, err)
	}
	if _, err := f.ns.BlobStatter().Stat(f.ctx, dgst); !errors.Is(err, distribution.ErrBlobUnknown) {
		t.Fatalf("manifest data after expiry: %v", err)
	}
}

func TestNoBlobTTLRecordsNothing(t *testing.T) {
	f := newSweepFixture(t, 0)
	if f.c != nil {
		t.Fatal("expiry state without blobttl")
	}
	if st, err := f.c.Sweep(f.ctx); err != nil || st != (SweepStats{}) {
		t.Fatalf("sweep without blobttl: %+v, %v", st, err)
	}
	f.c.Record(f.ctx, store.Ref{Digest: digest.FromString("x"), Repo: "a", Kind: store.KindLayer})
	if _, err := f.driver.Stat(f.ctx, pullsRoot); !store.IsNotFound(err) {
		t.Fatalf("a pull without blobttl wrote records: %v", err)
	}
}
