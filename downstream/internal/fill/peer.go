package fill

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/cluster"
	"github.com/content-cache/content-cache/downstream/internal/ident"
)

// Peers is how the fills of replicas sharing one storage make one upstream
// fetch per blob cluster-wide (see cluster/DESIGN.md): the replica that
// takes a digest's fill lease fetches it; the others stream it from that
// replica's internal endpoint (ServePeer) into fills of their own, and
// verify it themselves.
type Peers struct {
	Leases cluster.Leases
	// Self is this replica's internal URL, the owner it writes in leases.
	Self string
	// TTL is a fill lease's lifetime between renewals.
	TTL time.Duration
	// Key authenticates internal requests (PeerKey of http.secret).
	Key []byte
	// Client reaches the other replicas. Default: a client without
	// timeouts of its own beyond the fill's.
	Client *http.Client
	// Draining, once closed, stops this replica from taking fill leases:
	// it is stopping, and other replicas must not come to depend on its
	// fills. It still follows the fills of others, and fetches alone what
	// nobody leads. Nil: never.
	Draining <-chan struct{}

	auth *peerAuth // set by SetPeers
}

// PeerPath is where a replica serves its fills to the others.
const PeerPath = "/_content-cache/v1/fills/"

// SetPeers turns cluster-wide fills on: before serving, once (the internal
// URL and the key come from the registry's http section).
func (c *Fills) SetPeers(p *Peers) {
	if p.Client == nil {
		// No time limit on the answer: the leader answers once its
		// upstream did, and the follower gives up when the leader's lease
		// goes (watchLease), not before.
		p.Client = &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 16,
		}}
	}
	p.auth = newPeerAuth(p.Key, p.Self)
	c.peers = p
}

// ServePeer serves a fill this replica leads to another replica: the
// bytes as they arrive, the last one held back until verified, as to any
// client. 404 when this replica leads no fill of the digest (any more),
// 503 when its fill failed before streaming: the other replica then waits
// for the lease and takes the fill over.
func (c *Fills) ServePeer(w http.ResponseWriter, r *http.Request) {
	p := c.peers
	if p == nil || !p.auth.verify(r, c.now()) {
		http.Error(w, "not a replica of this cluster", http.StatusForbidden)
		return
	}
	dgst, err := digest.Parse(strings.TrimPrefix(r.URL.Path, PeerPath))
	if err != nil {
		http.Error(w, "bad digest", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	f := c.fills[fillKey{r.URL.Query().Get("origin"), dgst}]
	c.mu.Unlock()
	if f == nil {
		http.Error(w, "no fill of this digest here", http.StatusNotFound)
		return
	}
	// Whether the fill leads is known once it started: a follower that
	// saw this replica's lease may ask before the fill here says it leads
	// (between its lease and its look at storage). Refused then, it would
	// wait for the whole fill to end and read it from storage instead of
	// streaming it.
	st, err := f.Wait(r.Context(), func(s State) bool { return s.Started || s.Finished })
	if err != nil {
		return
	}
	if !st.Started {
		http.Error(w, "the fill failed before streaming", http.StatusServiceUnavailable)
		return
	}
	if !f.leads.Load() {
		http.Error(w, "no fill of this digest led here", http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Cache-Repository", st.By.Repo.Name())
	h.Set("Content-Cache-Origin", st.By.Repo.Origin())
	h.Set("Content-Cache-Upstream", st.Host)
	if st.Size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(st.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	_ = http.NewResponseController(w).Flush()
	if err := f.Stream(r.Context(), w, 0, st.Size); err != nil {
		// Never a complete-looking body: the follower sees the cut.
		panic(http.ErrAbortHandler)
	}
}

// leaseKey names the fill lease of a digest at a registry (its fills are
// apart, as in Fills.fills).
func leaseKey(k fillKey) string {
	if k.origin == "" {
		return "fill/" + k.dgst.String()
	}
	return "fill/" + k.origin + "/" + k.dgst.String()
}

// errStored ends a fill that found the blob stored when it got the lease:
// its previous holder committed it. Its waiters serve it from storage.
var errStored = errors.New("stored by another replica meanwhile")

// IsStoredMeanwhile reports whether a fill ended because another replica
// stored the blob: the caller serves it from storage.
func IsStoredMeanwhile(err error) bool { return errors.Is(err, errStored) }

// lease decides who fetches f cluster-wide. It returns the lease to fetch
// under (nil, nil: Redis is down, this replica fetches alone), or done when
// f was streamed from the replica holding the lease (err is then that
// stream's outcome).
func (c *Fills) lease(ctx context.Context, f *Fill, a *Asker) (l *cluster.Lease, done bool, err error) {
	p := c.peers
	key := leaseKey(f.key)
	failedHolder := false
	for {
		if p.draining() {
			return c.leaseDraining(ctx, f, a, key)
		}
		got, ok, err := p.Leases.Acquire(ctx, key, p.Self, p.TTL)
		if err != nil {
			if ctx.Err() != nil {
				return nil, true, ctx.Err()
			}
			c.log.WithError(err).WithField("digest", f.dgst).Warn("cannot reach redis for the fill lease; fetching without it (one fetch per replica)")
			return nil, false, nil
		}
		if ok {
			if failedHolder {
				c.metrics.LeaseTakeover()
				c.log.WithField("digest", f.dgst).Info("fill lease taken over from a replica that failed it")
			}
			// The previous holder may have committed the blob.
			if _, err := c.store.Stat(ctx, f.dgst); err == nil {
				_ = p.Leases.Release(context.WithoutCancel(ctx), got)
				f.update(func(s *State) { s.Stored = true })
				return nil, true, errStored
			}
			c.metrics.FillLed()
			return &got, false, nil
		}
		if got.Owner != p.Self {
			if done, err := c.follow(ctx, f, a, got); done {
				return nil, true, err
			}
		}
		// The holder cannot be streamed from (it died, stalls, ended its
		// fill, or is this replica's previous life): wait for its lease
		// to go, then try again.
		failedHolder = true
		if err := c.awaitLeaseChange(ctx, got); err != nil {
			return nil, true, err
		}
	}
}

func (p *Peers) draining() bool {
	select {
	case <-p.Draining:
		return true
	default:
		return false
	}
}

// leaseDraining is lease on a draining replica: it follows the replica
// holding the lease, if it can; otherwise it fetches without a lease (an
// upstream fetch of its own, rather than a lease others would follow into
// a stop).
func (c *Fills) leaseDraining(ctx context.Context, f *Fill, a *Asker, key string) (l *cluster.Lease, done bool, err error) {
	p := c.peers
	if got, held, err := p.Leases.Holder(ctx, key); err == nil && held && got.Owner != p.Self {
		if done, err := c.follow(ctx, f, a, got); done {
			return nil, true, err
		}
	}
	if _, err := c.store.Stat(ctx, f.dgst); err == nil {
		f.update(func(s *State) { s.Stored = true })
		return nil, true, errStored
	}
	return nil, false, nil
}

// awaitLeaseChange waits until l is no longer the lease held on its key.
func (c *Fills) awaitLeaseChange(ctx context.Context, l cluster.Lease) error {
	p := c.peers
	every := max(p.TTL/20, 20*time.Millisecond)
	for {
		cur, held, err := p.Leases.Holder(ctx, l.Key)
		if err != nil || !held || cur != l {
			return ctx.Err()
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// follow streams f from the replica holding lease l. done is false when
// that replica could not start streaming (unreachable, or no fill there):
// nothing reached f.
func (c *Fills) follow(ctx context.Context, f *Fill, a *Asker, l cluster.Lease) (done bool, err error) {
	p := c.peers
	// The stream ends when the leader loses its lease: a stalled leader
	// must not hold its followers beyond the lease's bound. The fill
	// itself goes on (download resumes it from an upstream).
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(pctx, http.MethodGet,
		strings.TrimSuffix(l.Owner, "/")+PeerPath+f.dgst.String()+"?"+url.Values{"origin": {f.key.origin}}.Encode(), nil)
	if err != nil {
		return false, nil
	}
	p.auth.sign(req, l.Owner, c.now())
	stop := make(chan struct{})
	defer close(stop)
	go c.watchLease(pctx, f, l, cancel, stop)
	resp, err := p.Client.Do(req)
	if err != nil {
		c.log.WithError(err).WithFields(map[string]any{"digest": f.dgst, "leader": l.Owner}).Info("cannot stream the fill from the replica leading it")
		return false, nil
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return false, nil
	}
	named, err := reference.WithName(resp.Header.Get("Content-Cache-Repository"))
	if err != nil {
		resp.Body.Close()
		return false, nil
	}
	repo := ident.Of(named)
	if o := resp.Header.Get("Content-Cache-Origin"); o != "" {
		if repo, err = ident.At(o, named); err != nil {
			resp.Body.Close()
			return false, nil
		}
	}
	c.metrics.FillFollowed()
	// By is no local request: the leader's origin answered its own
	// client. Requests here are authorized by a decision for this
	// repository or the origin's confirmation of their own.
	by := &Asker{Repo: repo}
	f.repo = repo
	size := resp.ContentLength
	f.update(func(s *State) { s.Started, s.By, s.Size, s.Host = true, by, size, resp.Request.URL.Host })
	// If the leader's stream is cut, the fill goes on from an upstream
	// with the requests authorized here to read it (Reads), or with a:
	// the origin decides on them as on any fetch.
	written, err := c.download(ctx, f, resp.Body, nil, a, size)
	if cause := context.Cause(pctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = fmt.Errorf("%w (%w)", err, cause)
	}
	f.update(func(s *State) {
		f.fetched = true
		s.Verified = err == nil
	})
	if err != nil {
		return true, err
	}
	// Verified: the clients here have every byte. The leader commits
	// after verifying; the blob is linked here once it did (it
	// releases its lease then).
	_ = written
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*p.TTL)
	defer wcancel()
	_ = c.awaitLeaseChange(wctx, l)
	if _, err := c.store.Stat(wctx, f.dgst); err == nil {
		f.update(func(s *State) { s.Stored = true })
	}
	return true, nil
}

// errLeaseLost cuts a stream from a leader that lost its lease.
var errLeaseLost = errors.New("the replica leading the fill lost its lease")

// watchLease cancels a follower's stream once the leader's lease is gone
// (expired: the leader died or stalls) or taken by another replica. A
// lease that nobody holds is given one more lease period before the cut:
// when Redis restarted empty, the leader, alive, takes its lease again at
// its next renewal (keepLease), and the stream goes on under the new token.
func (c *Fills) watchLease(ctx context.Context, f *Fill, l cluster.Lease, cancel context.CancelCauseFunc, stop <-chan struct{}) {
	p := c.peers
	t := time.NewTicker(max(p.TTL/4, 20*time.Millisecond))
	defer t.Stop()
	var gone time.Time // when the lease was first seen held by nobody
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		cur, held, err := p.Leases.Holder(ctx, l.Key)
		if err != nil {
			continue // Redis down: the stream itself tells whether the leader lives
		}
		switch {
		case held && cur == l:
			gone = time.Time{}
			continue
		case held && cur.Owner == l.Owner:
			l, gone = cur, time.Time{} // the leader took its lease again
			continue
		case !held && gone.IsZero():
			gone = c.now()
			continue
		case !held && c.now().Sub(gone) < p.TTL:
			continue
		}
		select {
		case <-stop: // the stream ended just now: the leader released its lease
			return
		default:
		}
		if f.verified() {
			return // every byte is here: the leader released after committing
		}
		cancel(errLeaseLost)
		return
	}
}

func (f *Fill) verified() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state.Verified || f.state.Written > 0 && f.state.Written == f.state.Size
}

// keepLease renews l every third of its ttl while the fill runs. When
// the renewal finds the lease gone and nobody holding it (Redis restarted
// empty, or lost the key), the fill takes it again under a new token and
// goes on: its bytes are verified before they are committed either way.
// When another replica holds it, and this replica's last renewal was
// less than a ttl ago (so the lease was not lost by a stall: Redis lost
// it, and another replica took it meanwhile), the fill goes on without a
// lease, as when Redis is down: the other replica fetches too, and both
// commit the same verified bytes. When this replica stalled past its
// lease and was taken over, the fill is cancelled: its followers were cut
// already, and it commits nothing. stop returns the lease held last, to
// release.
func (c *Fills) keepLease(ctx context.Context, l cluster.Lease) (context.Context, func() cluster.Lease) {
	p := c.peers
	ctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(p.TTL / 3)
		defer t.Stop()
		// The monotonic clock runs on while the process is stopped: a
		// stall past the ttl shows here.
		renewed := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := p.Leases.Renew(ctx, l, p.TTL)
			if err == nil {
				renewed = time.Now()
				continue
			}
			if errors.Is(err, cluster.ErrLeaseLost) {
				again, ok, aerr := p.Leases.Acquire(ctx, l.Key, p.Self, p.TTL)
				if aerr == nil && ok {
					c.log.WithFields(map[string]any{"lease": l.Key, "token": again.Token}).Info("fill lease gone with nobody holding it (redis lost it); taken again")
					l, renewed = again, time.Now()
					continue
				}
				if aerr != nil {
					continue // Redis failed meanwhile: try again at the next tick
				}
				if time.Since(renewed) < p.TTL {
					c.log.WithField("lease", l.Key).Warn("fill lease taken by another replica after redis lost it; going on without it")
					return
				}
				c.log.WithField("lease", l.Key).Warn("fill lease lost to another replica (this replica stalled past it); abandoning the fill")
				cancel(errLeaseLost)
				return
			}
			// Another error: Redis is down; the fill goes on, and its
			// followers still stream from it.
		}
	}()
	return ctx, func() cluster.Lease {
		close(stop)
		<-done
		cancel(nil)
		return l
	}
}
