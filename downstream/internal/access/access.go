// Package access holds the cache's one authorization flow: the rules, the
// decisions the origin gave (decisions.go), and asking the origin.
//
// The rules. Bytes of a blob or manifest reach a client only when
//   - the origin allows the client's credential on the repository: it just
//     said so, or said so less than authttl ago (a decision); and
//   - the repository has the digest at the origin: the cache holds a link
//     in that repository, made only after the origin confirmed it, or the
//     origin just answered 2xx for that repository and digest.
//
// A fill confirms both for the request whose credential it fetches with,
// and for nobody else: every other request is checked on its own, and only
// its own answer from the origin ever reaches it.
package access

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
)

// Access authorizes the requests of one cache instance.
type Access struct {
	pools     *upstream.Set
	decisions *Decisions
	creds     Hasher
	offline   *Offline // nil without offlinegrace
}

// New authorizes at the upstreams of each registry of pools, keeping
// "allowed" answers for ttl, or for the authttl of the registry.
//
// offlineGrace (0: off) is how long the origin's answers may serve while
// no upstream answers.
func New(pools *upstream.Set, ttl, offlineGrace time.Duration, now func() time.Time, m *metrics.Metrics) *Access {
	d := NewDecisions(ttl, now, m)
	for _, r := range pools.Registries() {
		d = d.WithTTL(r.Name, r.AuthTTL)
	}
	return &Access{pools: pools, decisions: d, creds: NewHasher(), offline: NewOffline(offlineGrace, now)}
}

// Offline is what may be served while no upstream answers (nil when
// offlinegrace is off).
func (a *Access) Offline() *Offline { return a.offline }

// Cred is the key of r's credential at the registry named origin. A
// request without credentials, at a registry with an anonymous account,
// is that account's: its decisions are the account's, apart from every
// client's own and from those of requests without credentials elsewhere.
func (a *Access) Cred(r *http.Request, origin string) Key {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if p := a.pools.For(origin); p != nil && p.Anonymous() {
			// No header holds a NUL: no client's credential keys the same.
			return a.creds.Key("\x00anonymous account of " + origin)
		}
	}
	return a.creds.Key(auth)
}

// KeyOf keys another secret than a credential (a signed URL's query), as
// Cred keys credentials.
func (a *Access) KeyOf(secret string) Key { return a.creds.Key(secret) }

// AllowedByDecision reports whether a recent "allowed" answer of the origin
// authorizes ck on repo for r. A request that asks for a fresh answer never
// is: chained caches ask so (see WantsFresh), which keeps the revocation
// bound at authttl however deep the chain.
func (a *Access) AllowedByDecision(r *http.Request, ck Key, repo ident.Repo) bool {
	return !WantsFresh(r) && a.decisions.IsAllowed(ck, repo.Key())
}

// Allow records that the origin just allowed ck on repo.
func (a *Access) Allow(ck Key, repo ident.Repo) {
	a.decisions.Allow(ck, repo.Key())
	a.offline.allow(ck, repo.Key())
}

// Forget drops ck's decision on repo, after the origin refused it.
func (a *Access) Forget(ck Key, repo ident.Repo) {
	a.decisions.Forget(ck, repo.Key())
	a.offline.forget(ck, repo.Key())
}

// Confirm asks the origin, with r's own credential, whether r may have
// path of repo (a HEAD), and records the decision when it may. The
// response's body is closed.
func (a *Access) Confirm(ctx context.Context, r *http.Request, path string, repo ident.Repo) (*upstream.Response, error) {
	return a.ConfirmUnless(ctx, r, path, repo, "")
}

// ConfirmUnless is Confirm sending If-None-Match: etag (none when empty).
// The origin compares it only after its authorization passed, so its 304
// allows r as a 2xx does: an unchanged tag costs it no manifest read.
func (a *Access) ConfirmUnless(ctx context.Context, r *http.Request, path string, repo ident.Repo, etag string) (*upstream.Response, error) {
	req := upstream.Request{Method: http.MethodHead, Path: path, Client: r.Header, IfNoneMatch: etag}
	if r.Method == http.MethodHead {
		// A client's HEAD gets the origin's answer to its own HEAD,
		// ranges included (206 and Content-Range).
		req.Range = r.Header.Get("Range")
	}
	resp, err := a.pools.Do(ctx, repo.Origin(), req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	a.Allow(a.Cred(r, repo.Origin()), repo)
	return resp, nil
}

// WantsFresh reports whether a request forbids answers from stored
// decisions: "Cache-Control: no-cache" or "max-age=0" (RFC 9111), or
// "Pragma: no-cache". Every request a cache sends upstream says no-cache,
// so an upstream content cache asks the origin again instead of reusing a
// decision that this cache would then keep for another authttl.
func WantsFresh(r *http.Request) bool {
	for _, v := range r.Header.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "no-cache", "max-age=0":
				return true
			}
		}
	}
	return strings.EqualFold(strings.TrimSpace(r.Header.Get("Pragma")), "no-cache")
}

// Refusal reports whether err is the origin's answer to this request alone
// (a 4xx: no access, no such blob there, a rate limit of this client), as
// opposed to a failure of the upstream that any request would meet.
func Refusal(err error) bool {
	se, ok := upstream.IsAnswer(err)
	return ok && se.Status >= 400 && se.Status < 500
}
