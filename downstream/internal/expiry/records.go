package expiry

import (
	"context"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/distribution/reference"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// pullsRoot is where the last-pull records live in the storage driver,
// beside distribution's /docker/registry/v2 tree, so that every cache sharing
// the storage reads and writes the same records and they survive restarts:
//
//	/content-cache/v1/pulls/<algorithm>/<hex>/<repository>/_layer     a blob pulled through <repository>
//	/content-cache/v1/pulls/<algorithm>/<hex>/<repository>/_manifest  a manifest pulled through <repository>
//	/content-cache/v1/pulls/<algorithm>/<hex>/_data                   data found in storage without a link
//
// Each file holds the time of the last recorded pull (RFC 3339). Components
// of repository names never start with "_", so the names cannot collide.
// One file per repository and digest means no read-modify-write between
// replicas.
const pullsRoot = "/content-cache/v1/pulls"

// recordPath is where the record of ref lives.
func recordPath(k store.Ref) string {
	return path.Join(digestRecordsDir(k.Digest), k.Repo, string(k.Kind))
}

func digestRecordsDir(dgst digest.Digest) string {
	return path.Join(pullsRoot, string(dgst.Algorithm()), dgst.Encoded())
}

// pullRecord is one record as read from storage.
type pullRecord struct {
	store.Ref
	at time.Time
}

// pulls reads and writes last-pull records. A record is written on the first
// pull this instance sees, then at most once per window: recording a pull
// costs a map lookup, not a storage write.
type pulls struct {
	driver storagedriver.StorageDriver
	window time.Duration
	now    func() time.Time
	log    *logrus.Entry

	mu      sync.Mutex
	written map[store.Ref]time.Time // what this instance last wrote, per record
}

func newPulls(driver storagedriver.StorageDriver, ttl time.Duration, now func() time.Time, log *logrus.Entry) *pulls {
	return &pulls{driver: driver, window: ttl / 10, now: now, log: log, written: make(map[store.Ref]time.Time)}
}

// record notes a pull of k now. Failing to write only risks an early
// expiry, which costs a refetch: it is logged, not returned.
func (p *pulls) record(ctx context.Context, k store.Ref) {
	p.recordWith(ctx, k, p.write)
}

// recordWith is record writing through write: the storage, or a pull
// index that batches its writes to storage.
func (p *pulls) recordWith(ctx context.Context, k store.Ref, write func(context.Context, store.Ref, time.Time) error) {
	if p == nil {
		return
	}
	now := p.now()
	p.mu.Lock()
	last, seen := p.written[k]
	if seen && now.Sub(last) < p.window {
		p.mu.Unlock()
		return
	}
	p.written[k] = now // claimed: concurrent pulls do not write it again
	p.mu.Unlock()
	// Not the client's cancellation: the pull happened.
	if err := write(context.WithoutCancel(ctx), k, now); err != nil {
		p.mu.Lock()
		if p.written[k].Equal(now) {
			if seen {
				p.written[k] = last
			} else {
				delete(p.written, k)
			}
		}
		p.mu.Unlock()
		p.log.WithError(err).WithField("digest", k.Digest).Warn("cannot record a pull; the content may expire early")
	}
}

func (p *pulls) write(ctx context.Context, k store.Ref, at time.Time) error {
	return p.driver.PutContent(ctx, recordPath(k), []byte(at.UTC().Format(time.RFC3339Nano)+"\n"))
}

// adopt writes a record for k at time at unless one exists, and reports
// whether it wrote one.
func (p *pulls) adopt(ctx context.Context, k store.Ref, at time.Time) (bool, error) {
	_, err := p.driver.Stat(ctx, recordPath(k))
	if err == nil {
		return false, nil
	}
	if !store.IsNotFound(err) {
		return false, err
	}
	return true, p.write(ctx, k, at)
}

// hasAny reports whether dgst has any record.
func (p *pulls) hasAny(ctx context.Context, dgst digest.Digest) (bool, error) {
	_, err := p.driver.Stat(ctx, digestRecordsDir(dgst))
	if store.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// all reads every record, by digest.
func (p *pulls) all(ctx context.Context) (map[digest.Digest][]pullRecord, error) {
	return p.walk(ctx, pullsRoot)
}

// of reads the records of one digest.
func (p *pulls) of(ctx context.Context, dgst digest.Digest) ([]pullRecord, error) {
	m, err := p.walk(ctx, digestRecordsDir(dgst))
	return m[dgst], err
}

func (p *pulls) walk(ctx context.Context, root string) (map[digest.Digest][]pullRecord, error) {
	out := make(map[digest.Digest][]pullRecord)
	err := p.driver.Walk(ctx, root, func(fi storagedriver.FileInfo) error {
		if fi.IsDir() {
			return nil
		}
		k, ok := parseRecordPath(fi.Path())
		if !ok {
			return nil // not ours: leave it alone
		}
		at, err := p.read(ctx, k)
		if err != nil {
			if store.IsNotFound(err) {
				return nil // removed meanwhile
			}
			return err
		}
		out[k.Digest] = append(out[k.Digest], pullRecord{Ref: k, at: at})
		return nil
	})
	if store.IsNotFound(err) {
		err = nil
	}
	return out, err
}

// read returns a record's time. An unreadable time counts as now (and is
// rewritten): a damaged record must not delete anything early.
func (p *pulls) read(ctx context.Context, k store.Ref) (time.Time, error) {
	b, err := p.driver.GetContent(ctx, recordPath(k))
	if err != nil {
		return time.Time{}, err
	}
	at, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	if err != nil {
		at = p.now()
		p.log.WithField("record", recordPath(k)).Warn("unreadable pull record; counting it as a pull now")
		if err := p.write(ctx, k, at); err != nil {
			return time.Time{}, err
		}
	}
	return at, nil
}

// forget drops what this instance remembers of a digest's records, once
// they are deleted.
func (p *pulls) forget(dgst digest.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.written {
		if k.Digest == dgst {
			delete(p.written, k)
		}
	}
}

// prune drops what this instance remembers of records older than age:
// the next pull of those writes its record again.
func (p *pulls) prune(age time.Duration) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, at := range p.written {
		if now.Sub(at) > age {
			delete(p.written, k)
		}
	}
}

// parseRecordPath is recordPath reversed.
func parseRecordPath(p string) (store.Ref, bool) {
	rest, ok := strings.CutPrefix(p, pullsRoot+"/")
	if !ok {
		return store.Ref{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) < 3 {
		return store.Ref{}, false
	}
	dgst := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[1])
	if dgst.Validate() != nil {
		return store.Ref{}, false
	}
	k := store.Ref{Digest: dgst, Kind: store.Kind(parts[len(parts)-1]), Repo: strings.Join(parts[2:len(parts)-1], "/")}
	switch {
	case k.Kind == store.KindData && k.Repo == "":
	case k.Kind == store.KindLayer || k.Kind == store.KindManifest:
		if _, err := reference.WithName(k.Repo); err != nil {
			return store.Ref{}, false
		}
	default:
		return store.Ref{}, false
	}
	return k, true
}
