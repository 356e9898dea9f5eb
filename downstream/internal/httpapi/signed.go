package httpapi

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// signedParams are the query parameters of a signed URL, the only ones
// forwarded upstream on a miss.
func signedParams() []string {
	return []string{
		signature.ParamMethod, signature.ParamRepo, signature.ParamDigest, signature.ParamExpiry,
		signature.ParamCache, signature.ParamKeyID, signature.ParamSig,
	}
}

// isSigned reports whether a request carries any parameter of a signed URL:
// such a request is judged by its signature alone, never by the usual flow
// (a half-signed URL is a refusal, not a fallback).
func isSigned(r *http.Request) bool {
	for k := range r.URL.Query() {
		if strings.HasPrefix(k, "cc-") {
			return true
		}
	}
	return false
}

// serveSigned answers a blob GET or HEAD redirected by the origin with a
// signed URL. The signature, verified against the origin's keys, allows
// exactly this repository and digest: a hit is served from storage, a miss
// is fetched upstream with the same signature and no client credential.
// Nothing about the signature is remembered as a decision.
func (c *API) serveSigned(w http.ResponseWriter, r *http.Request, repo reference.Named, dgst digest.Digest, rl *requestLog) {
	ctx := r.Context()
	q, err := c.verifySigned(r, repo, dgst)
	if err != nil {
		rl.result = metrics.ResultDenied
		// The reason names claims, never the signature itself.
		c.log.WithFields(map[string]any{"repository": repo.Name(), "digest": dgst.String(), "reason": err.Error()}).Warn("signed URL refused")
		writeError(w, errcode.ErrorCodeUnauthorized.WithMessage("signed URL refused: "+strings.TrimPrefix(err.Error(), "signature: ")))
		return
	}
	local, err := c.store.Repository(ctx, repo)
	if err != nil {
		writeError(w, err)
		return
	}
	blobs := local.Blobs(ctx)
	release, err := c.expiry.Hold(ctx, dgst)
	if err != nil {
		return // the client went away
	}
	defer release()
	if c.serveLocal(w, r, blobs, dgst) {
		rl.result = metrics.ResultHit
		c.pulled(r, repo, dgst, store.KindLayer)
		return
	}
	// The origin signed only after it authorized the pull and found the
	// blob in this repository: its signature confirms the link.
	if _, err := c.store.Stat(ctx, dgst); err == nil {
		c.expiry.Record(ctx, store.Ref{Digest: dgst, Repo: repo.Name(), Kind: store.KindLayer})
		if err := c.store.Link(ctx, repo, dgst); err != nil {
			c.log.WithError(err).WithField("digest", dgst).Warn("cannot link blob")
		} else if c.serveLocal(w, r, blobs, dgst) {
			rl.result = metrics.ResultHit
			c.pulled(r, repo, dgst, store.KindLayer)
			return
		}
	}
	hdr := r.Header.Clone()
	hdr.Del("Authorization") // the signature stands for the client
	if r.Method == http.MethodHead {
		resp, err := c.up.Do(ctx, upstream.Request{Method: http.MethodHead, Path: upstream.BlobPath(repo, dgst), Query: q, Client: hdr})
		if err != nil {
			c.answerSignedError(w, r, repo, err, rl)
			return
		}
		resp.Body.Close()
		rl.result, rl.upstream = metrics.ResultForwarded, resp.Host.Host
		upstream.CopyResponseHeaders(w.Header(), resp.Header, resp.Host)
		w.WriteHeader(resp.StatusCode)
		return
	}
	// No client's credential: Query marks a signed asker, and the fill
	// records no decision for it.
	a := &fill.Asker{Cred: access.Key{}, Repo: repo, Hdr: hdr, Query: q}
	ra := reqAuth{confirmed: true} // by the signature, for this repository and digest
	for attempt := 1; ; attempt++ {
		f, leader := c.fills.Join(ctx, a, dgst, true)
		err := c.joinFill(w, r, f, a, leader, &ra, rl)
		f.Release()
		var own ownAnswer
		if errors.As(err, &own) {
			c.answerSignedError(w, r, repo, own.err, rl)
			return
		}
		var pre preStartError
		if !errors.As(err, &pre) {
			return
		}
		if attempt == fillAttempts {
			c.answerSignedError(w, r, repo, pre.err, rl)
			return
		}
	}
}

// verifySigned checks r's signature and returns the query to forward
// upstream: the signed parameters only.
func (c *API) verifySigned(r *http.Request, repo reference.Named, dgst digest.Digest) (string, error) {
	s := c.cfg.Signing
	if s == nil || c.keys == nil {
		return "", errors.New("this content cache does not accept signed URLs (it has no signing configuration)")
	}
	q := r.URL.Query()
	// The name inside the signature is the only one that counts: it must
	// be this cache's, or a downstream's forwarding its client's miss.
	name := q.Get(signature.ParamCache)
	if !s.Accepts(name) {
		name = s.Name // Verify then says which cache it was issued for, once genuine
	}
	now := c.now()
	_, err := c.keys.Verifier().Verify(r.Method, repo.Name(), dgst.String(), q, now, name)
	if errors.Is(err, signature.ErrUnknownKey) && c.keys.Reload(r.Context()) {
		_, err = c.keys.Verifier().Verify(r.Method, repo.Name(), dgst.String(), q, now, name)
	}
	if err != nil {
		return "", err
	}
	fwd := url.Values{}
	for _, p := range signedParams() {
		fwd[p] = q[p]
	}
	return fwd.Encode(), nil
}

// answerSignedError passes on an upstream's refusal of, or failure with,
// a signed request. No credential's decision is touched: there is none.
func (c *API) answerSignedError(w http.ResponseWriter, r *http.Request, repo reference.Named, err error, rl *requestLog) {
	rl.result = metrics.ResultError
	rl.upstream = upstream.ErrorHost(err)
	if se, ok := upstream.IsAnswer(err); ok && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) {
		rl.result = metrics.ResultDenied
	}
	c.log.WithError(err).WithField("repository", repo.Name()).Debug("upstream refused or failed a signed request")
	writeUpstreamError(w, r, err)
}
