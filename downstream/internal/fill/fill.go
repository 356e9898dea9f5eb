package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/opencontainers/go-digest"
)

// storeTimeout bounds committing a verified fill to storage (a server-side
// copy on object stores), or removing a failed one's upload.
const storeTimeout = 5 * time.Minute

// Chunk is the read size of a fill and of the waiters streaming from it.
const Chunk = 256 << 10

// errBlobCorrupt reports upstream bytes that do not match the digest, or a
// body shorter or longer than announced.
var errBlobCorrupt = errors.New("upstream blob does not match its digest or size")

// Fill is one upstream fetch of a missing blob. It streams through a spool
// file that every waiter reads as bytes arrive, and is committed to local
// storage only once its size and digest are verified. It runs detached from
// the request that started it, so that waiters keep streaming when that
// client goes away.
type Fill struct {
	dgst  digest.Digest
	spool *os.File // created by the fill once the upstream answered 200
	// repo is the repository the fill fetches through: that of the Asker
	// the origin answered 200. Set before the fill shows as started, read
	// by others only after.
	repo ident.Repo

	// next lists the askers to fetch with if the origin refuses the
	// current one before streaming. Under Fills.mu, which also guards the
	// fill's removal from Fills.fills: nobody is enlisted in a fill that
	// gave up.
	next []*Asker

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change of state
	state   State
	refused map[*Asker]error // the origin's refusal of each Asker it refused
	refs    int              // the fill itself and its waiters: the spool lives until 0
	stored  atomic.Bool      // committed to storage
}

// State is a snapshot of a fill's progress.
type State struct {
	Started  bool   // the upstream answered 200: size and streaming are on
	By       *Asker // the asker it answered 200, once started
	Host     string // the upstream it streams from
	Size     int64  // announced size, -1 when unknown
	Written  int64  // bytes in the spool
	Finished bool
	Err      error // why the fill failed, when finished
}

// OK reports a finished, verified fill.
func (s State) OK() bool { return s.Finished && s.Err == nil }

// startFill registers and starts a fill that fetches with a first; the
// caller holds c.mu, so it does nothing slow (the spool file is created by
// the fill itself). It is returned with one reference for the caller.
func (c *Fills) startFill(ctx context.Context, a *Asker, dgst digest.Digest) *Fill {
	f := &Fill{
		dgst:    dgst,
		changed: make(chan struct{}),
		state:   State{Size: -1},
		refused: make(map[*Asker]error),
		refs:    2,
	}
	c.fills[dgst] = f
	// The caller holds dgst; the fill keeps it from expiry until it is
	// committed, however long it outlives that request.
	releaseHold := c.expiry.HoldAgain(dgst)
	fctx, cancel := c.detach(ctx, c.timeout)
	c.metrics.FillStarted()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer releaseHold()
		defer cancel()
		err := c.runFill(fctx, f, a)
		// Before the fill shows as finished: a client that received the
		// whole blob sees the fill out of content_cache_fills_in_flight.
		c.metrics.FillDone()
		c.mu.Lock()
		if c.fills[dgst] == f {
			delete(c.fills, dgst)
		}
		if f.stored.Load() {
			c.committed(dgst)
		}
		c.mu.Unlock()
		f.update(func(s *State) { s.Finished, s.Err = true, err })
		f.Release()
	}()
	return f
}

// runFill fetches the blob, feeding the spool and local storage, and commits
// it when verified. It fetches with a's credential; if the origin refuses
// it, with the next Asker enlisted, so that one client's refusal never
// fails another's pull.
func (c *Fills) runFill(ctx context.Context, f *Fill, a *Asker) error {
	resp, err := c.fetchFirst(ctx, f, a)
	if err != nil {
		return err
	}
	a = resp.by
	hdr := a.Hdr
	body, host := resp.Body, resp.Host
	defer func() {
		if body != nil {
			body.Close()
		}
	}()
	if a.Query == "" { // a signature is never a credential's decision
		c.access.Allow(a.Cred, a.Repo)
	}
	spool, err := os.CreateTemp(c.spoolDir, "content-cache-fill-*")
	if err != nil {
		return fmt.Errorf("creating spool file: %w", err)
	}
	// Unlinked at once: nothing is left behind if the process dies.
	_ = os.Remove(spool.Name())
	// Written before the fill shows as started; waiters read them after.
	f.spool, f.repo = spool, a.Repo
	size := resp.ContentLength
	f.update(func(s *State) { s.Started, s.By, s.Size, s.Host = true, a, size, host.Host })

	// Local storage is best effort: if it fails, waiters still get their
	// verified bytes from the spool, and nothing is committed.
	store := c.storeSpool(ctx, f)
	verified := false
	var written int64
	defer func() {
		// Committing or cleaning up has a lifetime of its own: a fill
		// that ran out of time or was cancelled still removes its upload.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer cancel()
		store.finish(sctx, verified, written)
	}()

	verifier := f.dgst.Verifier()
	buf := make([]byte, Chunk)
	failed := map[string]bool{}
	m := c.metrics
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			m.UpstreamBody(v2.RouteNameBlob, int64(n))
			if size >= 0 && written+int64(n) > size {
				return fmt.Errorf("%w: more than the announced %d bytes", errBlobCorrupt, size)
			}
			if _, err := f.spool.WriteAt(buf[:n], written); err != nil {
				return fmt.Errorf("writing spool: %w", err)
			}
			_, _ = verifier.Write(buf[:n])
			written += int64(n)
			f.update(func(s *State) { s.Written = written })
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
			failure := &upstream.UpstreamError{Host: host.Host, Err: fmt.Errorf("reading blob %s at byte %d: %w", f.dgst, written, rerr)}
			if ctx.Err() != nil {
				return failure
			}
			c.up.MarkDown(host, failure)
			failed[host.Host] = true
			body.Close()
			body, host, err = c.resume(ctx, f, hdr, a.Query, written, failed)
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

// askedResponse is an upstream's 200 and the Asker it answered.
type askedResponse struct {
	*upstream.Response
	by *Asker
}

// fetchFirst GETs the blob with a's credential, then with each Asker
// enlisted while the origin refuses the one before (each refusal is kept as
// that Asker's own answer). It gives up, removing the fill from c.fills, at
// the first failure that is not a refusal, or when nobody is left.
func (c *Fills) fetchFirst(ctx context.Context, f *Fill, a *Asker) (askedResponse, error) {
	for {
		resp, err := c.up.Do(ctx, upstream.Request{Method: http.MethodGet, Path: upstream.BlobPath(a.Repo.Name(), f.dgst), Query: a.Query, Client: a.Hdr})
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			err = &upstream.StatusError{Host: resp.Host.Host, Status: resp.StatusCode, Header: resp.Header}
		}
		if err == nil {
			return askedResponse{resp, a}, nil
		}
		if !access.Refusal(err) {
			return askedResponse{}, err
		}
		f.refuse(a, err)
		if a = c.nextAsker(f); a == nil {
			return askedResponse{}, err
		}
	}
}

// enlist adds a to the askers f may fetch with, unless f is over or
// started; false if f is no longer the fill of its digest.
func (c *Fills) enlist(f *Fill, a *Asker) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enlistLocked(f, a)
}

// enlistLocked is enlist with c.mu held.
func (c *Fills) enlistLocked(f *Fill, a *Asker) bool {
	if c.fills[f.dgst] != f {
		return false
	}
	f.mu.Lock()
	started := f.state.Started
	f.mu.Unlock()
	if !started {
		f.next = append(f.next, a)
	}
	return true
}

// nextAsker returns the next enlisted Asker the origin has not refused yet,
// or nil after removing f from c.fills (its digest's entry), so that no one joins a fill that
// gave up.
func (c *Fills) nextAsker(f *Fill) *Asker {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(f.next) > 0 {
		a := f.next[0]
		f.next = f.next[1:]
		// The same credential and repository, refused a moment ago: the
		// same answer, without asking again.
		if err := f.refusedKey(a.Key()); err != nil {
			f.refuse(a, err)
			continue
		}
		return a
	}
	if c.fills[f.dgst] == f {
		delete(c.fills, f.dgst)
	}
	return nil
}

// refuse keeps the origin's refusal of an Asker, as its answer, and wakes
// the waiters.
func (f *Fill) refuse(a *Asker, err error) {
	f.mu.Lock()
	f.refused[a] = err
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// RefusedFor returns the origin's refusal of a, if the fill asked with it.
func (f *Fill) RefusedFor(a *Asker) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refused[a]
}

// refusedKey returns a refusal of an Asker with k's credential and
// repository.
func (f *Fill) refusedKey(k access.DecisionKey) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for a, err := range f.refused {
		if a.Key() == k {
			return err
		}
	}
	return nil
}

// spoolStore copies a fill's spool into storage as it grows, on a goroutine
// of its own: the storage write overlaps with the download instead of
// slowing it.
type spoolStore struct {
	c     *Fills
	f     *Fill
	up    *store.Upload
	ended atomic.Bool // the download is over: copy what is left, then stop
	done  chan error
}

// storeSpool starts copying f into storage. The upload is created on the
// copy's goroutine: its directories and files (and their fsyncs) are not
// on the way to the client's first byte.
func (c *Fills) storeSpool(ctx context.Context, f *Fill) *spoolStore {
	s := &spoolStore{c: c, f: f, done: make(chan error, 1)}
	go func() { s.done <- s.copy(ctx) }()
	return s
}

func (s *spoolStore) copy(ctx context.Context) error {
	var err error
	if s.up, err = s.c.store.NewUpload(ctx, s.f.repo, s.c.now()); err != nil {
		return err
	}
	buf := make([]byte, Chunk)
	var off int64
	for {
		// Read ended before the length: once ended, the length is final.
		ended := s.ended.Load()
		s.f.mu.Lock()
		written := s.f.state.Written
		s.f.mu.Unlock()
		for off < written {
			n, err := s.f.spool.ReadAt(buf[:min(int64(len(buf)), written-off)], off)
			if n > 0 {
				if _, werr := s.up.Write(buf[:n]); werr != nil {
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
		if _, err := s.f.Wait(ctx, func(st State) bool { return st.Written > off || s.ended.Load() }); err != nil {
			return err
		}
	}
}

// finish ends the copy and commits the blob if the download was verified
// and storage holds all of it, or drops the upload: nothing unverified is
// kept.
func (s *spoolStore) finish(ctx context.Context, verified bool, size int64) {
	s.ended.Store(true)
	s.f.update(func(*State) {}) // wake the copy
	err := <-s.done
	if verified && err == nil {
		if err = s.up.Commit(ctx, s.f.repo, s.f.dgst, size); err == nil {
			s.f.stored.Store(true)
			return
		}
	}
	if err != nil {
		s.c.log.WithError(err).WithField("digest", s.f.dgst).Warn("cannot store blob locally")
	}
	if s.up != nil {
		s.up.Cancel(ctx)
	}
}

// resume continues a fill from offset at an upstream that has not failed
// it yet, with a Range request (or, if that upstream ignores ranges, by
// skipping the bytes already received).
func (c *Fills) resume(ctx context.Context, f *Fill, hdr http.Header, query string, offset int64, failed map[string]bool) (io.ReadCloser, *url.URL, error) {
	resp, err := c.up.Do(ctx, upstream.Request{
		Method: http.MethodGet, Path: upstream.BlobPath(f.repo.Name(), f.dgst), Query: query, Client: hdr,
		Range: fmt.Sprintf("bytes=%d-", offset), Skip: failed,
	})
	if err != nil {
		return nil, nil, err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", offset)):
		return resp.Body, resp.Host, nil
	case resp.StatusCode == http.StatusOK:
		// No range support: the bytes before offset come again.
		n, err := io.CopyN(io.Discard, resp.Body, offset)
		c.metrics.UpstreamBody(v2.RouteNameBlob, n)
		if err != nil {
			resp.Body.Close()
			return nil, nil, err
		}
		return resp.Body, resp.Host, nil
	}
	resp.Body.Close()
	return nil, nil, fmt.Errorf("upstream %s answered %d to a range request", resp.Host.Host, resp.StatusCode)
}

// ReadAt reads the spool: bytes the state says were written.
func (f *Fill) ReadAt(p []byte, off int64) (int, error) { return f.spool.ReadAt(p, off) }

// Digest is what the fill fetches.
func (f *Fill) Digest() digest.Digest { return f.dgst }

// update changes the state under the lock and wakes every waiter.
func (f *Fill) update(change func(*State)) {
	f.mu.Lock()
	change(&f.state)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Wait blocks until ready holds for the state, or ctx ends.
func (f *Fill) Wait(ctx context.Context, ready func(State) bool) (State, error) {
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

func (f *Fill) Acquire() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

func (f *Fill) Release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	f.mu.Unlock()
	if last && f.spool != nil {
		_ = f.spool.Close()
	}
}

// Asker is a request a fill may fetch with: its credential, its
// repository, and the headers that carry them upstream.
type Asker struct {
	Cred access.Key
	Repo ident.Repo
	Hdr  http.Header
	// Query is the signed query a request redirected by the origin fetches
	// with instead of a credential ("" for a credential's request).
	Query string
}

// Key is the asker's credential and repository.
func (a *Asker) Key() access.DecisionKey {
	return access.DecisionKey{Cred: a.Cred, Repo: a.Repo.Key()}
}
