package downstream

import (
	"context"
	"net/http"
	"strings"

	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// The rules of authorization, in one place. Bytes of a blob or manifest
// reach a client only when
//   - the origin allows the client's credential on the repository: it just
//     said so, or said so less than authttl ago (a decision); and
//   - the repository has the digest at the origin: the cache holds a link
//     in that repository, made only after the origin confirmed it, or the
//     origin just answered 2xx for that repository and digest.
//
// A fill confirms both for the request whose credential it fetches with,
// and for nobody else: every other request is checked on its own, and only
// its own answer from the origin ever reaches it.

// asker is a request a fill may fetch with: its credential, its
// repository, and the headers that carry them upstream.
type asker struct {
	cred credKey
	repo reference.Named
	hdr  http.Header
}

func (a *asker) key() decisionKey { return decisionKey{a.cred, a.repo.Name()} }

// allowedByDecision reports whether a recent "allowed" answer of the origin
// authorizes ck on repo for r. A request that asks for a fresh answer never
// is: chained caches ask so (see wantsFresh), which keeps the revocation
// bound at authttl however deep the chain.
func (c *Cache) allowedByDecision(r *http.Request, ck credKey, repo string) bool {
	return !wantsFresh(r) && c.decisions.isAllowed(ck, repo)
}

// wantsFresh reports whether a request forbids answers from stored
// decisions: "Cache-Control: no-cache" or "max-age=0" (RFC 9111), or
// "Pragma: no-cache". Every request this cache sends upstream says
// no-cache, so an upstream content cache asks the origin again instead of
// reusing a decision that this cache would then keep for another authttl.
func wantsFresh(r *http.Request) bool {
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

// confirm asks the origin, with r's own credential, whether r may pull dgst
// from repo (a HEAD), and records the decision when it may. The response's
// body is closed.
func (c *Cache) confirm(ctx context.Context, r *http.Request, path string, repo reference.Named) (*upstream.Response, error) {
	resp, err := c.up.Do(ctx, upstream.Request{Method: http.MethodHead, Path: path, Client: r.Header})
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	c.decisions.allow(c.cred(r), repo.Name())
	return resp, nil
}

// confirmBlob is confirm for a blob.
func (c *Cache) confirmBlob(ctx context.Context, r *http.Request, repo reference.Named, dgst digest.Digest) (*upstream.Response, error) {
	return c.confirm(ctx, r, blobPath(repo, dgst), repo)
}

// refusal reports whether err is the origin's answer to this request alone
// (a 4xx: no access, no such blob there, a rate limit of this client), as
// opposed to a failure of the upstream that any request would meet.
func refusal(err error) bool {
	se, ok := upstream.IsAnswer(err)
	return ok && se.Status >= 400 && se.Status < 500
}
