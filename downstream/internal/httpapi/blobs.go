package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"
)

// fillAttempts bounds how often a request joins or starts a fill again
// when a fill failed before streaming for a reason that was not the
// origin's answer to this request (the upstream failing for everybody).
const fillAttempts = 3

// serveBlob answers GET and HEAD of a blob. It reads top to bottom:
//
//  1. A signed URL is judged by its signature alone (signed.go).
//  2. Otherwise the request's right to this repository and digest rests on
//     a decision younger than authttl for its credential and repository,
//     or on the origin's confirmation of this very request (reqAuth),
//     asked once, and only when no decision allows it.
//  3. Stored: served once authorized, through the repository's link (made
//     if it is missing).
//  4. Not stored: a HEAD gets the upstream's answer; a GET joins or starts
//     the fill (joinFill authorizes each waiter on its own).
func (c *API) serveBlob(w http.ResponseWriter, r *http.Request, repo ident.Repo, dgst digest.Digest, rl *requestLog) (string, error) {
	if isSigned(r) {
		return c.serveSigned(w, r, repo, dgst, rl), nil
	}
	ctx := r.Context()
	ck := c.access.Cred(r, repo.Origin())
	local, err := c.store.Repository(ctx, repo)
	if err != nil {
		return "", err
	}
	// Expiry leaves it alone while this request lasts (or, if it is being
	// removed right now, this waits and then fetches it again).
	release, err := c.expiry.Hold(ctx, dgst)
	if err != nil {
		return "", err // the client went away
	}
	defer release()
	b := &blobRequest{c: c, w: w, r: r, repo: repo, dgst: dgst, blobs: local.Blobs(ctx), rl: rl,
		auth: reqAuth{decided: c.access.AllowedByDecision(r, ck, repo)}}

	if result, served, err := b.fromStorage(); served || err != nil {
		return result, err
	}
	if r.Method == http.MethodHead {
		// HEAD of an uncached blob: the upstream's answer, so that caches
		// chained behind this one see what the origin has.
		resp, err := c.access.Confirm(ctx, r, upstream.BlobPath(repo.Name(), dgst), repo)
		if err != nil {
			return "", err
		}
		rl.upstream = resp.Host.Host
		upstream.CopyResponseHeaders(w.Header(), resp.Header, resp.Host)
		w.WriteHeader(resp.StatusCode)
		return metrics.ResultForwarded, nil
	}
	return b.fromFill(&fill.Asker{Cred: ck, Repo: repo, Hdr: r.Header.Clone()})
}

// blobRequest is one GET or HEAD of a blob on its way through serveBlob.
type blobRequest struct {
	c     *API
	w     http.ResponseWriter
	r     *http.Request
	repo  ident.Repo
	dgst  digest.Digest
	blobs distribution.BlobStore // the repository's, through its links
	rl    *requestLog
	auth  reqAuth
	// triedLink: serving through the repository's link was tried and found
	// no link (nothing was written); trying again is pointless until the
	// link is made.
	triedLink bool
}

// serveLinked serves the blob through the repository's link, if there is
// one, and records the pull (linkAndServe's last step, which recorded it
// before making the link, serves without it).
func (b *blobRequest) serveLinked() bool {
	b.triedLink = true
	if !b.c.serveLocal(b.w, b.r, b.blobs, b.dgst) {
		return false
	}
	b.c.pulled(b.r, b.repo, b.dgst, store.KindLayer)
	return true
}

// fromStorage serves the blob if it is stored and the request authorized.
// served is false, with nothing written, when it is not stored (or went
// meanwhile): the caller fetches it.
func (b *blobRequest) fromStorage() (result string, served bool, err error) {
	c := b.c
	// The common hit: a decision, and the blob linked in this repository.
	if b.auth.decided && b.serveLinked() {
		return metrics.ResultHit, true, nil
	}
	// Stored for another repository (or linked here but not yet allowed).
	if _, err := c.store.Stat(b.r.Context(), b.dgst); err != nil {
		return "", false, nil
	}
	// Stored, allowed by a decision, not linked here: a fill of this
	// repository may be committing it (its data in place, its link next),
	// typically a prefetched one the client asked for as it finished. Its
	// link, made on the origin's 200 for this repository and digest, is
	// what a HEAD would confirm: it is waited for instead. The link is
	// looked for again in any case (the fill may have finished since):
	// a read of a link file, against a round trip to the origin.
	if b.auth.decided {
		if f := c.fills.Committing(b.repo, b.dgst); f != nil {
			if _, err := f.Wait(b.r.Context(), func(s fill.State) bool { return s.Finished }); err != nil {
				return "", false, err // the client went away
			}
		}
		if b.serveLinked() {
			return metrics.ResultHit, true, nil
		}
	}
	served, err = b.linkAndServe()
	if err != nil && !written(b.w) && c.canServeStale(b.r, b.repo, err) {
		// No upstream answers: what this credential may pull from this
		// repository (linked here after the origin confirmed it) is
		// served under offlinegrace.
		if stale, _ := serveStale(b.w, func() (bool, error) { return b.serveLinked(), nil }); stale {
			return metrics.ResultStale, true, nil
		}
	}
	return metrics.ResultHit, served, err
}

// linkAndServe serves stored data through the repository's link, once the
// request is authorized: by a decision, else by the origin's confirmation,
// which also makes the link if it is missing. false, having written
// nothing, when it cannot (the data went, the link failed): the caller
// fetches it.
func (b *blobRequest) linkAndServe() (bool, error) {
	c, ctx := b.c, b.r.Context()
	if (b.auth.decided || b.auth.confirmed) && !b.triedLink && b.serveLinked() {
		return true, nil
	}
	if !b.auth.confirmed {
		resp, err := c.access.Confirm(ctx, b.r, upstream.BlobPath(b.repo.Name(), b.dgst), b.repo)
		if err != nil {
			return false, err
		}
		b.auth.confirmed = true
		b.rl.upstream = resp.Host.Host
		// Linked here already (the decision had expired): served without
		// writing the link again (on an object store, four requests saved).
		if !b.triedLink && b.serveLinked() {
			return true, nil
		}
	}
	// Recorded before the link exists, so that expiry knows of every link
	// it may have to remove.
	c.expiry.Record(ctx, store.Ref{Digest: b.dgst, Repo: b.repo.Stored().Name(), Kind: store.KindLayer})
	if err := c.store.Link(ctx, b.repo, b.dgst); err != nil {
		c.log.WithError(err).WithField("digest", b.dgst).Warn("cannot link blob")
		return false, nil
	}
	// The pull is recorded already (above): served without recording it
	// twice.
	return c.serveLocal(b.w, b.r, b.blobs, b.dgst), nil
}

// fromFill streams the blob from the fill of its digest, started by this
// request (as a) or joined.
func (b *blobRequest) fromFill(a *fill.Asker) (string, error) {
	c, ctx := b.c, b.r.Context()
	fetch := false // a fill stored the blob since this request looked, but it is gone again
	for attempt := 1; ; attempt++ {
		// Only a request the origin allowed may take the fill over if the
		// credential it fetches with is refused: a flood of unauthorized
		// requests cannot stand in the way.
		f, leader := c.fills.Join(ctx, a, b.dgst, b.auth.confirmed || b.auth.decided, fetch)
		if f == nil {
			// A fill stored the blob since this request looked at storage:
			// it is served from there, not fetched a second time (and the
			// fill may have made the link).
			b.triedLink = false
			if served, err := b.linkAndServe(); served || err != nil {
				return metrics.ResultHit, err
			}
			fetch = true
			continue
		}
		result, err := c.joinFill(b.w, b.r, f, a, leader, &b.auth, b.rl)
		var own ownAnswer
		if errors.As(err, &own) {
			return "", own.err
		}
		var pre preStartError
		if !errors.As(err, &pre) {
			return result, err
		}
		// The fill failed before streaming without asking with this
		// request's credential (the upstream failed for everybody):
		// start or join another.
		if attempt == fillAttempts {
			return "", pre.err
		}
	}
}

// reqAuth is what a request's authorization rests on.
type reqAuth struct {
	decided   bool // a decision younger than authttl allows its credential on its repository
	confirmed bool // the origin said 2xx to it for its repository and digest
}

// preStartError is a fill that failed before streaming, for a reason that
// was not the origin's answer to this request: nothing was written to the
// client yet, so it may still get an answer of its own.
type preStartError struct{ err error }

func (e preStartError) Error() string { return e.err.Error() }

// ownAnswer is the upstream's answer to this request itself: its refusal,
// or its failure to answer. It goes to the client as it is.
type ownAnswer struct{ err error }

func (e ownAnswer) Error() string { return e.err.Error() }

// joinFill streams fill f to the client once the origin allowed this
// request, and links the blob into the client's repository once verified.
// The fill's own answer from the origin authorizes only the request whose
// credential it fetched with; anybody else needs a decision for the same
// repository (the fill's 200 says the repository has the digest) or the
// origin's confirmation of its own repository and digest.
func (c *API) joinFill(w http.ResponseWriter, r *http.Request, f *fill.Fill, a *fill.Asker, leader bool, ra *reqAuth, rl *requestLog) (string, error) {
	ctx := r.Context()
	if !leader && !ra.confirmed && !ra.decided && f.Asking(a.Key()) {
		// The fill is asking the origin for this digest with this very
		// credential and repository, since this request arrived: that
		// answer is this request's too, without a HEAD of its own (32
		// clients of one credential missing one blob: one request to
		// the origin, not 32).
		st, err := f.Shared(ctx, a)
		var refused *fill.Refused
		switch {
		case errors.As(err, &refused):
			return "", ownAnswer{refused.Err}
		case err != nil:
			return "", err // the client went away
		case st.Started && st.By.Key() == a.Key():
			ra.confirmed = true
		case !st.Started:
			return "", preStartError{st.Err}
		}
	}
	if !leader && !ra.confirmed && !ra.decided {
		// Not known to the cache: ask the origin before waiting, so that
		// a refusal comes at once and the request may take the fill over.
		if _, err := c.access.Confirm(ctx, r, upstream.BlobPath(a.Repo.Name(), f.Digest()), a.Repo); err != nil {
			return "", ownAnswer{err}
		}
		ra.confirmed = true
		c.fills.Enlist(f, a)
	}
	st, err := f.Wait(ctx, func(s fill.State) bool { return s.Started || s.Finished || f.RefusedFor(a) != nil })
	if err != nil {
		return "", err // the client went away
	}
	if err := f.RefusedFor(a); err != nil {
		return "", ownAnswer{err}
	}
	if !st.Started {
		return "", preStartError{st.Err}
	}
	mine := st.By == a
	if !mine && !ra.confirmed && (!ra.decided || st.By.Repo.Key() != a.Repo.Key()) {
		if _, err := c.access.Confirm(ctx, r, upstream.BlobPath(a.Repo.Name(), f.Digest()), a.Repo); err != nil {
			return "", ownAnswer{err}
		}
		ra.confirmed = true
	}
	// Authorized on its own: the fill may resume with this request's
	// credential should its stream be cut.
	f.Reads(a)
	result := metrics.ResultMiss
	if !leader {
		result = metrics.ResultCoalesced
	}
	rl.upstream = st.Host
	c.pulled(r, a.Repo, f.Digest(), store.KindLayer)
	st, err = c.streamFill(w, r, f, st)
	if err != nil {
		return result, err
	}
	if a.Repo.Key() != st.By.Repo.Key() {
		// The client has its bytes; the blob may be linked into its
		// repository (confirmed above) once the fill committed it.
		_ = http.NewResponseController(w).Flush()
		if st, err = f.Wait(ctx, func(s fill.State) bool { return s.Finished }); err != nil || !st.Stored {
			return result, nil
		}
		if err := c.store.Link(ctx, a.Repo, f.Digest()); err != nil {
			c.log.WithError(err).WithField("digest", f.Digest()).Warn("cannot link blob")
		}
	}
	return result, nil
}

// streamFill sends the fill's bytes to the client as they arrive (see
// Fill.Stream). A failed fill aborts the response: a client never sees a
// complete-looking wrong body.
func (c *API) streamFill(w http.ResponseWriter, r *http.Request, f *fill.Fill, st fill.State) (fill.State, error) {
	ctx := r.Context()
	size := st.Size
	start, end, status := int64(0), size, http.StatusOK
	if rng := honoredRange(r, f.Digest()); rng != "" {
		var ok bool
		if size >= 0 {
			start, end, ok = parseRange(rng, size)
		}
		if !ok {
			// Unknown size, several ranges, an unsatisfiable one or an odd
			// form: http.ServeContent answers from local storage once
			// stored, exactly as at the origin.
			return c.serveAfterFill(w, r, f)
		}
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, size))
	}
	h := w.Header()
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	h.Set("Docker-Content-Digest", f.Digest().String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+f.Digest().String()+`"`)
	h.Set("Accept-Ranges", "bytes")
	if end >= 0 {
		h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	}
	w.WriteHeader(status)
	// The headers go now, not with the first chunk: time to first byte is
	// the upstream's plus a round trip.
	_ = http.NewResponseController(w).Flush()

	if err := f.Stream(ctx, w, start, end); err != nil {
		if ctx.Err() != nil {
			return st, err // the client went away
		}
		// Headers are out: all that is left is to cut the response short,
		// so that it never looks complete (a body of unknown size would
		// otherwise end cleanly). A failed write is the client's going.
		if errors.Is(err, fill.ErrFailed) {
			c.log.WithError(err).WithField("digest", f.Digest()).Warn("fill failed; aborting the client's response")
		}
		panic(http.ErrAbortHandler)
	}
	return st, nil
}

// serveAfterFill waits for the fill and serves the stored blob.
func (c *API) serveAfterFill(w http.ResponseWriter, r *http.Request, f *fill.Fill) (fill.State, error) {
	st, err := f.Wait(r.Context(), func(s fill.State) bool { return s.Finished })
	if err != nil {
		return st, err
	}
	if st.Err != nil {
		return st, preStartError{st.Err}
	}
	local, err := c.store.Repository(r.Context(), st.By.Repo)
	if err != nil {
		return st, err
	}
	if !c.serveLocal(w, r, local.Blobs(r.Context()), f.Digest()) {
		return st, errcode.ErrorCodeBlobUnknown.WithDetail(f.Digest())
	}
	return st, nil
}

// pulled records a GET served, for expiry: hits, misses and coalesced
// waiters alike. HEAD is not a pull.
func (c *API) pulled(r *http.Request, repo ident.Repo, dgst digest.Digest, k store.Kind) {
	if r.Method == http.MethodGet {
		c.expiry.Record(r.Context(), store.Ref{Digest: dgst, Repo: repo.Stored().Name(), Kind: k})
	}
}

// honoredRange returns the Range header to honor for the blob dgst: none
// when If-Range names anything but its strong ETag (a date never matches:
// distribution gives http.ServeContent no modification time), so that the
// client gets the whole blob as at the origin.
func honoredRange(r *http.Request, dgst digest.Digest) string {
	rng := r.Header.Get("Range")
	if ir := r.Header.Get("If-Range"); rng != "" && ir != "" {
		// As http.ServeContent's If-Range check: the first entity tag of
		// the value, compared strongly.
		if !strings.HasPrefix(strings.TrimLeft(ir, " \t"), `"`+dgst.String()+`"`) {
			return ""
		}
	}
	return rng
}

// parseRange parses a single satisfiable "bytes=" range against size,
// returning the half-open interval [start, end) with start < end. ok is
// false for everything else (several ranges, other units, an unsatisfiable
// or empty range such as bytes=-0): http.ServeContent answers those, so
// that the answer is distribution's.
func parseRange(h string, size int64) (start, end int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes=")
	if !found || strings.Contains(spec, ",") {
		return 0, 0, false
	}
	a, b, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return 0, 0, false
	}
	if a == "" { // suffix: the last b bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || size <= 0 {
			return 0, 0, false
		}
		return max(size-n, 0), size, true
	}
	s, err := strconv.ParseInt(a, 10, 64)
	if err != nil || s < 0 || s >= size {
		return 0, 0, false
	}
	e := size - 1
	if b != "" {
		if e, err = strconv.ParseInt(b, 10, 64); err != nil || e < s {
			return 0, 0, false
		}
		e = min(e, size-1)
	}
	return s, e + 1, true
}
