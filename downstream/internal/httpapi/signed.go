package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
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
//
// It writes every answer itself and returns the request's result: the
// usual error handling would retry or forget with the client's own
// credential, which has no part here.
func (c *API) serveSigned(w http.ResponseWriter, r *http.Request, repo ident.Repo, dgst digest.Digest, rl *requestLog) string {
	ctx := r.Context()
	q, err := c.verifySigned(r, repo, dgst)
	if err != nil {
		// The reason names claims, never the signature itself.
		c.log.WithFields(map[string]any{"repository": repo.String(), "digest": dgst.String(), "reason": err.Error()}).Warn("signed URL refused")
		writeError(w, errcode.ErrorCodeUnauthorized.WithMessage("signed URL refused: "+strings.TrimPrefix(err.Error(), "signature: ")))
		return metrics.ResultDenied
	}
	local, err := c.store.Repository(ctx, repo)
	if err != nil {
		writeError(w, err)
		return metrics.ResultError
	}
	blobs := local.Blobs(ctx)
	release, err := c.expiry.Hold(ctx, dgst)
	if err != nil {
		return metrics.ResultError // the client went away
	}
	defer release()
	// The origin signed only after it authorized the pull and found the
	// blob in this repository: its signature confirms the link.
	stored := func() bool {
		if c.serveLocal(w, r, blobs, dgst) {
			c.pulled(r, repo, dgst, store.KindLayer)
			return true
		}
		if _, err := c.store.Stat(ctx, dgst); err != nil {
			return false
		}
		c.expiry.Record(ctx, store.Ref{Digest: dgst, Repo: repo.Stored().Name(), Kind: store.KindLayer})
		if err := c.store.Link(ctx, repo, dgst); err != nil {
			c.log.WithError(err).WithField("digest", dgst).Warn("cannot link blob")
			return false
		}
		if c.serveLocal(w, r, blobs, dgst) {
			c.pulled(r, repo, dgst, store.KindLayer)
			return true
		}
		return false
	}
	if stored() {
		return metrics.ResultHit
	}
	hdr := r.Header.Clone()
	hdr.Del("Authorization") // the signature stands for the client
	if r.Method == http.MethodHead {
		resp, err := c.up.Do(ctx, repo.Origin(), upstream.Request{Method: http.MethodHead, Path: upstream.BlobPath(repo.Name(), dgst), Query: q, Client: hdr})
		if err != nil {
			return c.answerSignedError(w, r, repo, err, rl)
		}
		resp.Body.Close()
		rl.upstream = resp.Host.Host
		upstream.CopyResponseHeaders(w.Header(), resp.Header, resp.Host)
		w.WriteHeader(resp.StatusCode)
		return metrics.ResultForwarded
	}
	// No client's credential: Query marks a signed asker, and the fill
	// records no decision for it.
	// Its key is the signature's: each signature is an asker of its own.
	a := &fill.Asker{Cred: c.access.KeyOf("cc-signed " + q), Repo: repo, Hdr: hdr, Query: q}
	ra := reqAuth{confirmed: true} // by the signature, for this repository and digest
	fetch := false
	for attempt := 1; ; attempt++ {
		f, leader := c.fills.Join(ctx, a, dgst, true, fetch)
		if f == nil {
			// A fill stored the blob since this request looked.
			if stored() {
				return metrics.ResultHit
			}
			fetch = true
			continue
		}
		result, err := c.joinFill(w, r, f, a, leader, &ra, rl)
		var own ownAnswer
		if errors.As(err, &own) {
			return c.answerSignedError(w, r, repo, own.err, rl)
		}
		var pre preStartError
		if !errors.As(err, &pre) {
			// Served, or cut short once streaming (the client went away,
			// or the fill failed and the response was aborted).
			return cmp.Or(result, metrics.ResultError)
		}
		if attempt == fillAttempts {
			return c.answerSignedError(w, r, repo, pre.err, rl)
		}
	}
}

// verifySigned checks r's signature and returns the query to forward
// upstream: the signed parameters only.
func (c *API) verifySigned(r *http.Request, repo ident.Repo, dgst digest.Digest) (string, error) {
	s := c.cfg.Signing
	if s == nil || c.keys == nil {
		return "", errors.New("this content cache does not accept signed URLs (it has no signing configuration)")
	}
	if repo.Origin() != "" {
		// Signatures are the configured origin's, for its repositories:
		// never a pass to fetch from another registry.
		return "", errors.New("signed URLs are accepted for the configured origin's repositories only")
	}
	q := r.URL.Query()
	// The name inside the signature is the only one that counts: it must
	// be this cache's, or a downstream's forwarding its client's miss.
	name := q.Get(signature.ParamCache)
	if !s.Accepts(name) {
		name = s.Name // Verify then says which cache it was issued for, once genuine
	}
	now := c.now()
	claims, err := c.keys.Verifier().Verify(r.Method, repo.Name(), dgst.String(), q, now, name)
	if errors.Is(err, signature.ErrUnknownKey) && c.keys.Reload(r.Context()) {
		claims, err = c.keys.Verifier().Verify(r.Method, repo.Name(), dgst.String(), q, now, name)
	}
	if err != nil {
		return "", err
	}
	if limit := now.Add(s.MaxExpiry); claims.Expiry.After(limit) {
		// Genuine, but valid for too long: a leaked URL must not stay good.
		return "", fmt.Errorf("the signature expires at %s, more than %s (signing.maxexpiry) from now", claims.Expiry.UTC().Format(time.RFC3339), s.MaxExpiry)
	}
	fwd := url.Values{}
	for _, p := range signedParams() {
		fwd[p] = q[p]
	}
	return fwd.Encode(), nil
}

// answerSignedError passes on an upstream's refusal of, or failure with,
// a signed request. No credential's decision is touched: there is none.
func (c *API) answerSignedError(w http.ResponseWriter, r *http.Request, repo ident.Repo, err error, rl *requestLog) string {
	result := metrics.ResultError
	if host := upstream.ErrorHost(err); host != "" {
		rl.upstream = host
	}
	if se, ok := upstream.IsAnswer(err); ok && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) {
		result = metrics.ResultDenied
	}
	if !errors.Is(err, context.Canceled) {
		c.log.WithError(err).WithField("repository", repo.String()).Debug("upstream refused or failed a signed request")
	}
	writeUpstreamError(w, r, err)
	return result
}
