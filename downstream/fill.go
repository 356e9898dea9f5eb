package downstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distribution/distribution/v3"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// fillChunk is the read size of a fill and of the waiters streaming from it.
const fillChunk = 256 << 10

// errBlobCorrupt reports upstream bytes that do not match the digest, or a
// body shorter or longer than announced.
var errBlobCorrupt = errors.New("upstream blob does not match its digest or size")

// fill is one upstream fetch of a missing blob. It streams through a spool
// file that every waiter reads as bytes arrive, and is committed to local
// storage only once its size and digest are verified. It runs detached from
// the request that started it, so that waiters keep streaming when that
// client goes away.
type fill struct {
	dgst  digest.Digest
	repo  reference.Named // the repository it was asked through
	cred  credKey         // the credential it fetches with
	spool *os.File

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of state
	state   fillState
	refs    int // the fill itself and its waiters: the spool lives until 0
}

// fillState is a snapshot of a fill's progress.
type fillState struct {
	started  bool   // the upstream answered 200: size and streaming are on
	host     string // the upstream it streams from
	size     int64  // announced size, -1 when unknown
	written  int64  // bytes in the spool
	finished bool
	err      error // why the fill failed, when finished
}

// ok reports a finished, verified fill.
func (s fillState) ok() bool { return s.finished && s.err == nil }

// startFill registers and starts a fill; the caller holds c.mu. It is
// returned with one reference for the caller.
func (c *Cache) startFill(ctx context.Context, repo reference.Named, dgst digest.Digest, r *http.Request) (*fill, error) {
	spool, err := os.CreateTemp(c.spoolDir, "content-cache-fill-*")
	if err != nil {
		return nil, fmt.Errorf("creating spool file: %w", err)
	}
	// Unlinked at once: nothing is left behind if the process dies.
	_ = os.Remove(spool.Name())
	f := &fill{
		dgst: dgst, repo: repo, cred: cred(r), spool: spool,
		changed: make(chan struct{}),
		state:   fillState{size: -1},
		refs:    2,
	}
	c.fills[dgst] = f
	// The caller holds dgst; the fill keeps it from expiry until it is
	// committed, however long it outlives that request.
	releaseHold := c.inUse.holdAgain(dgst)
	hdr := r.Header.Clone()
	fctx, cancel := detach(ctx, c.cfg.FillTimeout)
	c.metrics.fillStarted()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer releaseHold()
		defer cancel()
		err := c.runFill(fctx, f, hdr)
		// Before the fill shows as finished: a client that received the
		// whole blob sees the fill out of content_cache_fills_in_flight.
		c.metrics.fillDone()
		c.mu.Lock()
		delete(c.fills, dgst)
		c.mu.Unlock()
		f.update(func(s *fillState) { s.finished, s.err = true, err })
		f.release()
	}()
	return f, nil
}

// runFill fetches the blob, feeding the spool and local storage, and commits
// it when verified.
func (c *Cache) runFill(ctx context.Context, f *fill, hdr http.Header) error {
	resp, err := c.up.do(ctx, request{method: http.MethodGet, path: blobPath(f.repo, f.dgst), client: hdr})
	if err != nil {
		return err
	}
	body, host := resp.Body, resp.host
	defer func() {
		if body != nil {
			body.Close()
		}
	}()
	if resp.StatusCode != http.StatusOK {
		return &StatusError{Host: host.Host, Status: resp.StatusCode, Header: resp.Header}
	}
	c.decisions.allow(f.cred, f.repo.Name())
	size := resp.ContentLength
	f.update(func(s *fillState) { s.started, s.size, s.host = true, size, host.Host })

	// Local storage is best effort: if it fails, waiters still get their
	// verified bytes from the spool, and nothing is committed.
	store := c.storeSpool(ctx, f)
	verified := false
	var written int64
	defer func() { store.finish(ctx, verified, written) }()

	verifier := f.dgst.Verifier()
	buf := make([]byte, fillChunk)
	failed := map[string]bool{}
	m := c.metrics
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			m.upstreamBody(v2.RouteNameBlob, int64(n))
			if size >= 0 && written+int64(n) > size {
				return fmt.Errorf("%w: more than the announced %d bytes", errBlobCorrupt, size)
			}
			if _, err := f.spool.WriteAt(buf[:n], written); err != nil {
				return fmt.Errorf("writing spool: %w", err)
			}
			_, _ = verifier.Write(buf[:n])
			written += int64(n)
			f.update(func(s *fillState) { s.written = written })
		}
		if rerr == io.EOF && (size < 0 || written == size) {
			break
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			// The upstream failed mid-stream: go on from another one,
			// from the byte reached.
			failure := &UpstreamError{Host: host.Host, Err: fmt.Errorf("reading blob %s at byte %d: %w", f.dgst, written, rerr)}
			if ctx.Err() != nil {
				return failure
			}
			c.up.markDown(host, failure)
			failed[host.Host] = true
			body.Close()
			body, host, err = c.resume(ctx, f, hdr, written, failed)
			if err != nil {
				return failure
			}
			c.log.WithFields(map[string]any{"digest": f.dgst, "from": failure.Host, "to": host.Host, "offset": written}).Info("fill resumed from another upstream")
		}
	}
	if size >= 0 && written != size {
		return fmt.Errorf("%w: %d of %d bytes", errBlobCorrupt, written, size)
	}
	if !verifier.Verified() {
		return fmt.Errorf("%w: content of %d bytes does not hash to %s", errBlobCorrupt, written, f.dgst)
	}
	verified = true
	return nil
}

// spoolStore copies a fill's spool into storage as it grows, on a goroutine
// of its own: the storage write overlaps with the download instead of
// slowing it. It writes through the storage driver, into an upload
// directory of the repository, and moves the data into distribution's blob
// store once verified: distribution's BlobWriter would hash every byte a
// second time. A crash leaves the upload directory to distribution's
// upload purger, which reads its startedat file.
type spoolStore struct {
	c     *Cache
	f     *fill
	dir   string // <repository>/_uploads/<uuid>
	fw    storagedriver.FileWriter
	ended atomic.Bool // the download is over: copy what is left, then stop
	done  chan error
}

// storeSpool starts copying f into storage. The upload is created on the
// copy's goroutine: its directories and files (and their fsyncs) are not
// on the way to the client's first byte.
func (c *Cache) storeSpool(ctx context.Context, f *fill) *spoolStore {
	s := &spoolStore{c: c, f: f, dir: uploadDir(f.repo.Name(), uuid.NewString()), done: make(chan error, 1)}
	go func() { s.done <- s.copy(ctx) }()
	return s
}

func (s *spoolStore) copy(ctx context.Context) error {
	err := s.c.driver.PutContent(ctx, path.Join(s.dir, "startedat"), []byte(s.c.now().UTC().Format(time.RFC3339)))
	if err != nil {
		return err
	}
	if s.fw, err = s.c.driver.Writer(ctx, path.Join(s.dir, "data"), false); err != nil {
		return err
	}
	buf := make([]byte, fillChunk)
	var off int64
	for {
		// Read ended before the length: once ended, the length is final.
		ended := s.ended.Load()
		s.f.mu.Lock()
		written := s.f.state.written
		s.f.mu.Unlock()
		for off < written {
			n, err := s.f.spool.ReadAt(buf[:min(int64(len(buf)), written-off)], off)
			if n > 0 {
				if _, werr := s.fw.Write(buf[:n]); werr != nil {
					return werr
				}
				off += int64(n)
			}
			if err != nil && n == 0 {
				return err
			}
		}
		if ended {
			return nil
		}
		if _, err := s.f.wait(ctx, func(st fillState) bool { return st.written > off || s.ended.Load() }); err != nil {
			return err
		}
	}
}

// finish ends the copy and commits the blob if the download was verified
// and storage holds all of it, or drops the upload: nothing unverified is
// kept.
func (s *spoolStore) finish(ctx context.Context, verified bool, size int64) {
	s.ended.Store(true)
	s.f.update(func(*fillState) {}) // wake the copy
	err := <-s.done
	committed := false
	if verified && err == nil {
		if committed, err = s.commit(ctx, size); err == nil {
			return
		}
	}
	if err != nil {
		s.c.log.WithError(err).WithField("digest", s.f.dgst).Warn("cannot store blob locally")
	}
	if s.fw != nil && !committed {
		_ = s.fw.Cancel(ctx)
		_ = s.fw.Close()
	}
	_ = s.c.driver.Delete(ctx, s.dir)
}

// commit moves the verified upload into the blob store and links it into
// the repository it was asked through. It reports whether the writer was
// committed (and closed), so that a failure after that does not cancel it.
//
// The size is checked only after Commit, and against what the storage
// reports: object stores' writers (s3, azure, gcs) buffer and upload in
// parts, so before Commit neither Size nor Stat counts the last part.
func (s *spoolStore) commit(ctx context.Context, size int64) (committed bool, err error) {
	if err := s.fw.Commit(ctx); err != nil {
		return false, err
	}
	if err := s.fw.Close(); err != nil {
		return true, err
	}
	upload := path.Join(s.dir, "data")
	fi, err := s.c.driver.Stat(ctx, upload)
	if err != nil {
		return true, err
	}
	if fi.Size() != size {
		return true, fmt.Errorf("storage holds %d of %d bytes", fi.Size(), size)
	}
	// Stored already? A read at the blob's end costs one request and no
	// listing on every driver; a Stat of a missing object lists on object
	// stores (s3: HEAD then LIST).
	data := blobDataPath(s.f.dgst)
	r, err := s.c.driver.Reader(ctx, data, size)
	if err == nil {
		_ = r.Close()
	} else if isNotFound(err) {
		if err := s.c.driver.Move(ctx, upload, data); err != nil {
			return true, err
		}
	}
	// Stored already (another cache sharing the storage): the upload goes.
	_ = s.c.driver.Delete(ctx, s.dir)
	return true, s.c.link(ctx, s.f.repo, s.f.dgst)
}

// resume continues a fill from offset at an upstream that has not failed
// it yet, with a Range request (or, if that upstream ignores ranges, by
// skipping the bytes already received).
func (c *Cache) resume(ctx context.Context, f *fill, hdr http.Header, offset int64, failed map[string]bool) (io.ReadCloser, *url.URL, error) {
	resp, err := c.up.do(ctx, request{
		method: http.MethodGet, path: blobPath(f.repo, f.dgst), client: hdr,
		rng: fmt.Sprintf("bytes=%d-", offset), skip: failed,
	})
	if err != nil {
		return nil, nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", offset)):
		return resp.Body, resp.host, nil
	case resp.StatusCode == http.StatusOK:
		// No range support: the bytes before offset come again.
		n, err := io.CopyN(io.Discard, resp.Body, offset)
		c.metrics.upstreamBody(v2.RouteNameBlob, n)
		if err != nil {
			resp.Body.Close()
			return nil, nil, err
		}
		return resp.Body, resp.host, nil
	}
	resp.Body.Close()
	return nil, nil, fmt.Errorf("upstream %s answered %d to a range request", resp.host.Host, resp.StatusCode)
}

// update changes the state under the lock and wakes every waiter.
func (f *fill) update(change func(*fillState)) {
	f.mu.Lock()
	change(&f.state)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// wait blocks until ready holds for the state, or ctx ends.
func (f *fill) wait(ctx context.Context, ready func(fillState) bool) (fillState, error) {
	for {
		f.mu.Lock()
		s, ch := f.state, f.changed
		f.mu.Unlock()
		if ready(s) {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, ctx.Err()
		}
	}
}

func (f *fill) acquire() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

func (f *fill) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	f.mu.Unlock()
	if last {
		_ = f.spool.Close()
	}
}

// mountStat links an existing blob into a repository without copying it:
// the caller has checked that the origin has the blob in that repository.
type mountStat struct {
	from reference.Canonical
	desc v1.Descriptor
}

func (m mountStat) Apply(v any) error {
	opts, ok := v.(*distribution.CreateOptions)
	if !ok {
		return fmt.Errorf("unexpected options type %T", v)
	}
	opts.Mount.ShouldMount = true
	opts.Mount.From = m.from
	opts.Mount.Stat = &m.desc
	return nil
}

// link makes a blob whose data is stored locally part of repo.
func (c *Cache) link(ctx context.Context, repo reference.Named, dgst digest.Digest) error {
	desc, err := c.local.BlobStatter().Stat(ctx, dgst)
	if err != nil {
		return err
	}
	from, err := reference.WithDigest(repo, dgst)
	if err != nil {
		return err
	}
	r, err := c.local.Repository(ctx, repo)
	if err != nil {
		return err
	}
	bw, err := r.Blobs(ctx).Create(ctx, mountStat{from: from, desc: desc})
	var mounted distribution.ErrBlobMounted
	if errors.As(err, &mounted) {
		return nil
	}
	if err == nil {
		_ = bw.Cancel(ctx)
		return fmt.Errorf("linking %s into %s: mount was not done", dgst, repo.Name())
	}
	return err
}

func blobPath(repo reference.Named, dgst digest.Digest) string {
	return "/v2/" + repo.Name() + "/blobs/" + dgst.String()
}
