package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/cluster"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/opencontainers/go-digest"
)

// storeTimeout bounds committing a verified fill to storage (a server-side
// copy on object stores), or removing a failed one's upload.
const storeTimeout = 5 * time.Minute

// Chunk is the unit a fill reads from upstream into and keeps in memory.
const Chunk = 256 << 10

// The window of a fill: the bytes it keeps in memory for the readers
// streaming it. A reader that falls further behind (a slow client, a late
// joiner) reads from the upload in progress or, once committed, from
// storage. windowSize is what is kept behind the newest byte; a fill never
// runs more than storeLag + the store's part size (Store.PartSize) ahead
// of its storage writes, so the memory of one fill stays below windowSize +
// storeLag + part size + storeSlack + Chunk: 18.5 MiB on s3 and 24.5 MiB
// on gcs with their default part sizes. On the filesystem, whose upload a
// reader reads back as it is written (Store.Readable), both are fileWindow:
// 2.3 MiB.
const (
	windowSize = 4 << 20
	storeLag   = 4 << 20
	// fileWindow is the window and the storage lag on the filesystem: a
	// reader behind it reads the upload in progress from the page cache
	// (with sendfile: less CPU than a copy from memory), and a fill that
	// small runs in the chunks kept free (chunkList), where 8.5 MiB of
	// chunks per fill were allocated anew and faulted in again (a fault
	// per 4 KiB, inside the socket reads into them).
	fileWindow = 1 << 20
	// storeSlack is kept past what the storage writer took: the
	// filesystem driver's writer holds up to 4 KiB in a buffer, and a
	// reader of the upload in progress must find every byte it is sent to.
	storeSlack = 64 << 10
)

// errBlobCorrupt reports upstream bytes that do not match the digest, or a
// body shorter or longer than announced.
var errBlobCorrupt = errors.New("upstream blob does not match its digest or size")

// Fill is one upstream fetch of a missing blob. Its bytes go from the
// upstream's body into a bounded window in memory, which every waiter
// streams from as they arrive and the storage writer copies into an upload;
// the blob is committed to local storage only once its size and digest are
// verified. It runs detached from the request that started it, so that
// waiters keep streaming when that client goes away.
type Fill struct {
	c    *Fills
	key  fillKey
	dgst digest.Digest
	// repo is the repository the fill fetches through: that of the Asker
	// the origin answered 200. Set before the fill shows as started, read
	// by others only after.
	repo ident.Repo
	// leads is set while the fill fetches under the cluster-wide fill
	// lease: the other replicas may stream it (ServePeer).
	leads atomic.Bool

	// next lists the askers to fetch with if the origin refuses the
	// current one before streaming. Under Fills.mu, which also guards the
	// fill's removal from Fills.fills: nobody is enlisted in a fill that
	// gave up.
	next []*Asker

	mu sync.Mutex
	// Waiters are woken by the kind of change they wait for: readers by
	// new bytes and state changes, the storage writer by a whole chunk,
	// the download by room in storage. One channel for all woke every
	// goroutine of a fill on every read from the upstream.
	changed, chunkDone, storedMore signal
	state                          State
	refused                        map[*Asker]error // the origin's refusal of each Asker it refused
	// readers are askers authorized on their own to read the fill (the
	// one the origin answered 200, each joiner's decision, the origin's
	// confirmation or a signature), at most maxReaders distinct ones. A
	// resume asks with them: the request that started the fill on this
	// replica may be one nobody authorized (a flood's), and the origin's
	// refusal of it must not cut the clients it did allow.
	readers []*Asker
	asking  *Asker // the Asker the fill is asking the origin with
	sharing int    // requests waiting in Shared for the answer to asking

	// The window: chunks hold bytes [base, state.Written). Only the fill
	// appends, into the spare capacity of the last chunk: bytes below
	// state.Written never change, so readers send them without the lock.
	chunks []*chunk
	base   int64
	// The storage writer: stored bytes are in the upload; storing is
	// false once it stopped (failed, or finished after the download).
	upload  *store.Upload
	stored  int64
	storing bool
	fetched bool // the download is over, verified or not
}

// State is a snapshot of a fill's progress.
type State struct {
	Started bool   // the upstream answered 200: size and streaming are on
	By      *Asker // the asker it answered 200, once started
	Host    string // the upstream it streams from
	Size    int64  // announced size, -1 when unknown
	Written int64  // bytes received
	// Verified: every byte arrived and matches the digest. Readers may
	// send the last byte; storage is committed after.
	Verified bool
	Stored   bool // committed to storage
	Finished bool
	Err      error // why the download failed, when finished unverified
}

// startFill registers and starts a fill that fetches with a first; the
// caller holds c.mu, so it does nothing slow.
func (c *Fills) startFill(ctx context.Context, a *Asker, dgst digest.Digest) *Fill {
	f := &Fill{
		c:       c,
		key:     fillKey{a.Repo.Origin(), dgst},
		dgst:    dgst,
		state:   State{Size: -1},
		refused: make(map[*Asker]error),
	}
	c.fills[f.key] = f
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
		// In flight until committed: a cache whose gauge reads 0 has
		// stored everything it fetched.
		c.metrics.FillDone()
		c.mu.Lock()
		if c.fills[f.key] == f {
			delete(c.fills, f.key)
		}
		if f.isStored() {
			c.committed(dgst)
		}
		c.mu.Unlock()
		f.update(func(s *State) { s.Finished, s.Err = true, err })
	}()
	return f
}

// runFill fetches the blob into the window and storage, and commits it
// when verified. It fetches with a's credential; if the origin refuses it,
// with the next Asker enlisted, so that one client's refusal never fails
// another's pull. Its error is the download's: a verified blob that could
// not be stored is no failure for the readers.
func (c *Fills) runFill(ctx context.Context, f *Fill, a *Asker) error {
	if c.peers != nil {
		l, done, err := c.lease(ctx, f, a)
		if done {
			return err
		}
		if l != nil {
			var stop func() cluster.Lease
			ctx, stop = c.keepLease(ctx, *l)
			f.leads.Store(true)
			defer func() {
				f.leads.Store(false)
				held := stop()
				// After the commit: a follower that sees the lease go
				// finds the blob stored.
				_ = c.peers.Leases.Release(context.WithoutCancel(ctx), held)
			}()
		}
	}
	resp, err := c.fetchFirst(ctx, f, a)
	if err != nil {
		return err
	}
	a = resp.by
	f.Reads(a)
	if a.Query == "" && !a.Prefetch { // a signature is never a credential's decision; a prefetch decides nothing
		c.access.Allow(a.Cred, a.Repo)
	}
	f.repo = a.Repo // before the fill shows as started; others read it after
	size := resp.ContentLength
	f.update(func(s *State) {
		s.Started, s.By, s.Size, s.Host = true, a, size, resp.Host.Host
		// Local storage is best effort: if it fails, the readers in
		// the window still get their verified bytes, and nothing is
		// committed.
		f.storing = true
	})
	// The requests waiting for the start are runnable now; yield so that
	// they send their headers before this goroutine reads and hashes its
	// way through the body (on a busy process they would wait for its
	// time slice: milliseconds of time to first byte).
	runtime.Gosched()
	stored := make(chan error, 1)
	go func() { stored <- f.store(ctx) }()

	written, err := c.download(ctx, f, resp.Body, resp.Host, a, size)
	f.update(func(s *State) {
		f.fetched = true
		s.Verified = err == nil
	})
	serr := <-stored
	// Committing or cleaning up has a lifetime of its own: a fill that
	// ran out of time or was cancelled still removes its upload.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	f.commit(sctx, err == nil, serr, written)
	return err
}

// download reads the body into the window, from another upstream if this
// one fails mid-stream, and verifies size and digest. It returns how many
// bytes it received, and closes the body it ends with. A nil host is
// another replica's stream of its fill (follow): if that stream is cut,
// the fill goes on from an upstream, from the byte reached, asking with
// the fill's readers (or, if none is authorized yet, with first, the
// request that started the fill here).
func (c *Fills) download(ctx context.Context, f *Fill, body io.ReadCloser, host *url.URL, first *Asker, size int64) (int64, error) {
	defer func() {
		if body != nil {
			body.Close()
		}
	}()
	verifier := f.dgst.Verifier()
	failed := map[string]bool{}
	m := c.metrics
	var written int64
	for {
		buf, err := f.room(ctx)
		if err != nil {
			return written, err
		}
		n, rerr := body.Read(buf)
		if n > 0 {
			if host != nil { // not another replica's stream
				m.UpstreamBody(f.key.origin, v2.RouteNameBlob, int64(n))
			}
			if size >= 0 && written+int64(n) > size {
				return written, fmt.Errorf("%w: more than the announced %d bytes", errBlobCorrupt, size)
			}
			_, _ = verifier.Write(buf[:n])
			written += int64(n)
			f.appended(n)
			if written == int64(n) {
				runtime.Gosched() // the first bytes go out now, likewise
			}
		}
		if rerr == io.EOF && (size < 0 || written == size) {
			break
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			if host == nil {
				// Another replica's stream was cut: it died, stalled past
				// its lease, or drained. Go on from an upstream with this
				// replica's own request, from the byte reached.
				cut := fmt.Errorf("streaming blob %s from the replica leading its fill, at byte %d: %w", f.dgst, written, rerr)
				if ctx.Err() != nil {
					return written, cut
				}
				body.Close()
				body, host, err = c.resume(ctx, f, first, written, failed)
				if err != nil {
					return written, fmt.Errorf("%w; resuming from an upstream: %w", cut, err)
				}
				c.metrics.LeaseTakeover()
				c.log.WithFields(map[string]any{"digest": f.dgst, "to": host.Host, "offset": written}).Info("fill resumed from an upstream: the replica leading it stopped streaming")
				continue
			}
			// The upstream failed mid-stream: go on from another one,
			// from the byte reached.
			failure := &upstream.UpstreamError{Host: host.Host, Err: fmt.Errorf("reading blob %s at byte %d: %w", f.dgst, written, rerr)}
			if ctx.Err() != nil {
				return written, failure
			}
			c.up.MarkDown(f.key.origin, host, failure)
			failed[host.Host] = true
			body.Close()
			body, host, err = c.resume(ctx, f, first, written, failed)
			if err != nil {
				return written, failure
			}
			c.log.WithFields(map[string]any{"digest": f.dgst, "from": failure.Host, "to": host.Host, "offset": written}).Info("fill resumed from another upstream")
		}
	}
	if size >= 0 && written != size {
		return written, fmt.Errorf("%w: %d of %d bytes", errBlobCorrupt, written, size)
	}
	if !verifier.Verified() {
		return written, fmt.Errorf("%w: content of %d bytes does not hash to %s", errBlobCorrupt, written, f.dgst)
	}
	return written, nil
}

// room returns where the next upstream bytes go: the spare capacity of the
// window's last chunk, or a new chunk. It waits while storage is more than
// its lag behind, so that the window stays bounded.
func (f *Fill) room(ctx context.Context) ([]byte, error) {
	lag := f.c.storeLag
	if err := f.await(ctx, &f.storedMore, func() bool { return !f.storing || f.state.Written-f.stored < lag }); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if k := len(f.chunks); k > 0 && !f.chunks[k-1].full() {
		last := f.chunks[k-1].buf
		return last[len(last):cap(last)], nil
	}
	ch := f.c.newChunk()
	f.chunks = append(f.chunks, ch)
	return ch.buf[:Chunk], nil
}

// appended makes n more bytes, read into room's slice, visible.
func (f *Fill) appended(n int) {
	f.mu.Lock()
	last := f.chunks[len(f.chunks)-1]
	last.buf = last.buf[:len(last.buf)+n]
	f.state.Written += int64(n)
	f.trimLocked()
	f.changed.fire()
	if last.full() {
		f.chunkDone.fire()
	}
	f.mu.Unlock()
}

// trimLocked drops the chunks no one needs from the window any more: more
// than windowSize behind the newest byte, and in storage (or storage gave
// up).
func (f *Fill) trimLocked() {
	for len(f.chunks) > 1 {
		ch := f.chunks[0]
		end := f.base + int64(len(ch.buf))
		if f.state.Written-end < f.c.window || f.storing && end+storeSlack > f.stored {
			return
		}
		f.chunks[0] = nil
		f.chunks = f.chunks[1:]
		f.base = end
		ch.dropped = true
		if ch.readers == 0 {
			f.c.freeChunk(ch)
		}
	}
}

// store writes the window into an upload as it grows, on a goroutine of its
// own: storage writes overlap with the download instead of slowing it. The
// upload is created here: its directories and files (and their fsyncs) are
// not on the way to the client's first byte.
func (f *Fill) store(ctx context.Context) (err error) {
	defer func() {
		f.mu.Lock()
		f.storing = false
		f.trimLocked()
		f.broadcastLocked()
		f.mu.Unlock()
	}()
	// Created once the first bytes are in the window: its directories and
	// fsync do not compete with the origin's first byte and the client's.
	if err := f.await(ctx, &f.changed, func() bool { return f.state.Written > 0 || f.fetched }); err != nil {
		return err
	}
	up, err := f.c.store.NewUpload(ctx, f.repo, f.c.now())
	f.mu.Lock()
	f.upload = up
	f.mu.Unlock()
	if err != nil {
		return err
	}
	for {
		var seg []byte
		done := false
		if err := f.await(ctx, &f.chunkDone, func() bool {
			seg, _ = f.segmentLocked(f.stored, f.state.Written)
			done = f.fetched && f.stored == f.state.Written
			// A segment reaches the end of its chunk, which is then
			// full, when it runs to its capacity.
			if seg != nil && !f.fetched && len(seg) < cap(seg) {
				// Whole chunks only while the download runs: a write
				// per read from the upstream socket (a few KiB) cost
				// more CPU than the rest of the fill.
				seg = nil
			}
			return seg != nil || done || f.fetched && !f.state.Verified
		}); err != nil {
			return err
		}
		if seg == nil {
			if done {
				return nil
			}
			return errors.New("download failed")
		}
		if _, err := up.Write(seg); err != nil {
			return err
		}
		f.mu.Lock()
		f.stored += int64(len(seg))
		f.trimLocked()
		f.storedMore.fire()
		f.mu.Unlock()
	}
}

// commit keeps the upload as the blob if the download was verified and
// storage holds all of it, or drops it: nothing unverified is kept.
func (f *Fill) commit(ctx context.Context, verified bool, storeErr error, size int64) {
	f.mu.Lock()
	up := f.upload
	f.mu.Unlock()
	err := storeErr
	if verified && err == nil {
		if err = up.Commit(ctx, f.repo, f.dgst, size); err == nil {
			f.update(func(s *State) { s.Stored = true })
			f.c.expiry.Stored(f.dgst, size)
			return
		}
	}
	if err != nil && verified {
		f.c.log.WithError(err).WithField("digest", f.dgst).Warn("cannot store blob locally")
	}
	if up != nil {
		up.Cancel(ctx)
	}
}

// segmentLocked returns the window's bytes from off, up to limit and to
// the end of the chunk holding off, and that chunk; nil when off is not in
// the window or nothing is there yet.
func (f *Fill) segmentLocked(off, limit int64) ([]byte, *chunk) {
	if off < f.base || off >= limit {
		return nil, nil
	}
	pos := f.base
	for _, ch := range f.chunks {
		end := pos + int64(len(ch.buf))
		if off < end {
			return ch.buf[off-pos : min(end, limit)-pos], ch
		}
		pos = end
	}
	return nil, nil
}

func (f *Fill) isStored() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Stored
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
		f.mu.Lock()
		f.asking = a
		f.mu.Unlock()
		resp, err := c.up.Do(ctx, f.key.origin, upstream.Request{Method: http.MethodGet, Path: upstream.BlobPath(a.Repo.Name(), f.dgst), Query: a.Query, Client: a.Hdr})
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
	if c.fills[f.key] != f || a.Repo.Origin() != f.key.origin {
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
	if c.fills[f.key] == f {
		delete(c.fills, f.key)
	}
	return nil
}

// refuse keeps the origin's refusal of an Asker, as its answer, and wakes
// the waiters.
func (f *Fill) refuse(a *Asker, err error) {
	f.mu.Lock()
	f.refused[a] = err
	f.broadcastLocked()
	f.mu.Unlock()
}

// Asking reports whether the fill has not started and is asking the
// origin with k's credential and repository right now: its answer, given
// after the call, is then the origin's answer to k (see Shared). Never for
// a signed asker: a signature is no credential's answer, whatever key a
// client's Authorization header makes; nor for a prefetch.
func (f *Fill) Asking(k access.DecisionKey) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.asking
	return !f.state.Started && !f.state.Finished && a != nil && a.Query == "" && !a.Prefetch && a.Key() == k
}

// Shared waits for the origin's answer to the fill's request with a's
// credential and repository, when Asking said it was under way: nil and
// the fill's state once it started with that credential and repository
// (the origin's 200 for a's repository and digest), the origin's refusal
// of them, or the state without error when the fill went on otherwise
// (started with another credential, or failed without an answer).
func (f *Fill) Shared(ctx context.Context, a *Asker) (State, error) {
	k := a.Key()
	f.mu.Lock()
	f.sharing++
	f.mu.Unlock()
	st, err := f.Wait(ctx, func(s State) bool { return s.Started || s.Finished || f.refusedKey(k) != nil })
	f.mu.Lock()
	f.sharing--
	f.mu.Unlock()
	if err != nil {
		return st, err
	}
	if rerr := f.refusedKey(k); rerr != nil {
		return st, &Refused{rerr}
	}
	return st, nil
}

// Refused is the origin's refusal of a credential and repository.
type Refused struct{ Err error }

func (r *Refused) Error() string { return r.Err.Error() }
func (r *Refused) Unwrap() error { return r.Err }

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

// resume continues a fill from offset at an upstream that has not failed
// it yet. It asks with each of the fill's readers in turn while the
// origin refuses them (a credential revoked meanwhile), or with first
// when no reader is known yet.
func (c *Fills) resume(ctx context.Context, f *Fill, first *Asker, offset int64, failed map[string]bool) (io.ReadCloser, *url.URL, error) {
	askers := f.readersNow()
	if len(askers) == 0 {
		askers = []*Asker{first}
	}
	var err error
	for _, a := range askers {
		var body io.ReadCloser
		var host *url.URL
		body, host, err = c.resumeWith(ctx, f, a, offset, failed)
		if err == nil || !access.Refusal(err) {
			return body, host, err
		}
	}
	return nil, nil, err
}

// resumeWith asks for the fill's bytes from offset with a's credential (or
// signature) and repository, with a Range request (or, if that upstream
// ignores ranges, by skipping the bytes already received).
func (c *Fills) resumeWith(ctx context.Context, f *Fill, a *Asker, offset int64, failed map[string]bool) (io.ReadCloser, *url.URL, error) {
	resp, err := c.up.Do(ctx, f.key.origin, upstream.Request{
		Method: http.MethodGet, Path: upstream.BlobPath(a.Repo.Name(), f.dgst), Query: a.Query, Client: a.Hdr,
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
		c.metrics.UpstreamBody(f.key.origin, v2.RouteNameBlob, n)
		if err != nil {
			resp.Body.Close()
			return nil, nil, err
		}
		return resp.Body, resp.Host, nil
	}
	resp.Body.Close()
	return nil, nil, &upstream.StatusError{Host: resp.Host.Host, Status: resp.StatusCode, Header: resp.Header}
}

// maxReaders bounds the askers a fill keeps to resume with: a few
// credentials are enough to survive one's revocation.
const maxReaders = 4

// Reads notes that a, authorized on its own, reads the fill: should the
// stream the fill reads from be cut, the fill may resume with a.
func (f *Fill) Reads(a *Asker) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.readers) >= maxReaders {
		return
	}
	for _, r := range f.readers {
		if r.Key() == a.Key() && r.Query == a.Query {
			return
		}
	}
	f.readers = append(f.readers, a)
}

// readersNow is a copy of the fill's readers.
func (f *Fill) readersNow() []*Asker {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.readers)
}

// Digest is what the fill fetches.
func (f *Fill) Digest() digest.Digest { return f.dgst }

// update changes the state under the lock and wakes every waiter.
func (f *Fill) update(change func(*State)) {
	f.mu.Lock()
	change(&f.state)
	f.broadcastLocked()
	f.mu.Unlock()
}

// broadcastLocked wakes every waiter; f.mu is held.
func (f *Fill) broadcastLocked() {
	f.changed.fire()
	f.chunkDone.fire()
	f.storedMore.fire()
}

// signal wakes the goroutines waiting for one kind of change of a fill. Its
// channel is made only when someone waits; both methods run under the
// fill's lock.
type signal struct{ ch chan struct{} }

func (s *signal) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) fire() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// Wait blocks until ready holds for the state, or ctx ends. ready runs
// without the fill's lock: it may call the fill's methods.
func (f *Fill) Wait(ctx context.Context, ready func(State) bool) (State, error) {
	for {
		f.mu.Lock()
		s, ch := f.state, f.changed.wait()
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

// await blocks until cond, called with f.mu held, holds, or ctx ends.
func (f *Fill) await(ctx context.Context, sig *signal, cond func() bool) error {
	return f.awaitIdle(ctx, sig, cond, nil)
}

// awaitIdle is await that calls idle, without the lock, the first time cond
// does not hold, and then looks again before blocking.
func (f *Fill) awaitIdle(ctx context.Context, sig *signal, cond func() bool, idle func()) error {
	for {
		f.mu.Lock()
		ok, ch := cond(), sig.wait()
		f.mu.Unlock()
		if ok {
			return nil
		}
		if idle != nil {
			idle()
			idle = nil
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
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
	// Prefetch marks a fill started ahead of any blob request (prefetch
	// on manifest): the origin's 200 to it authorizes nobody. It records
	// no decision, and no request shares its answer (Asking): each blob
	// request is authorized on its own.
	Prefetch bool
}

// Key is the asker's credential and repository.
func (a *Asker) Key() access.DecisionKey {
	return access.DecisionKey{Cred: a.Cred, Repo: a.Repo.Key()}
}
