package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
)

// writeError answers with an OCI error body.
func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	_ = errcode.ServeJSON(w, err)
}

func errNameInvalid(name string, err error) error {
	return errcode.ErrorCodeNameInvalid.WithMessage(fmt.Sprintf("invalid repository name %q: %v", name, err))
}

func errDigestInvalid(d string) error {
	return errcode.ErrorCodeDigestInvalid.WithMessage(fmt.Sprintf("invalid digest %q", d))
}

// errLoopDetected answers a request that already passed this cache: the
// upstreams configured form a loop.
var errLoopDetected = errcode.Register("content-cache", errcode.ErrorDescriptor{
	Value:          "LOOP_DETECTED",
	Message:        "request loop between content caches",
	Description:    "The request already passed this content cache: the upstreams of the caches form a loop.",
	HTTPStatusCode: http.StatusLoopDetected,
})

// writeUpstreamError answers a client whose request the upstream refused or
// could not serve. An upstream's answer (401 with its challenge, 403, 404,
// 429 ...) is passed on as it came; no answer at all becomes an OCI
// UNAVAILABLE error naming the upstream, never the credentials.
func writeUpstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if se, ok := upstream.IsAnswer(err); ok {
		h := w.Header()
		for k, vs := range se.Header {
			if upstream.HopHeader(k) || k == "Content-Length" {
				continue
			}
			h[k] = vs
		}
		n := strconv.Itoa(len(se.Body))
		if cl := se.Header.Get("Content-Length"); r.Method == http.MethodHead && len(se.Body) == 0 && cl != "" {
			// An answer to a HEAD has no body, but its length is the one
			// the origin's GET would send: pass it on as it came.
			n = cl
		}
		h.Set("Content-Length", n)
		w.WriteHeader(se.Status)
		if r.Method != http.MethodHead {
			_, _ = w.Write(se.Body)
		}
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	var ue *upstream.UpstreamError
	if !errors.As(err, &ue) {
		// The cache's own failure (local storage), not the upstream's.
		writeError(w, errcode.ErrorCodeUnknown.WithMessage("content-cache: "+err.Error()))
		return
	}
	writeError(w, errcode.ErrorCodeUnavailable.WithMessage("content-cache could not reach its upstream: "+err.Error()))
}

// finish is the one place that writes a handler's error and classifies the
// request for the log and the metrics (hit, miss, coalesced, forwarded,
// denied or error). A handler returns its result, or the error to answer
// with: an upstream's answer goes to the client as it came (a refusal to
// a blob or manifest also drops the credential's decision on the
// repository), anything else as an OCI error. An error after the response
// started changes nothing the client sees: the handler cut it short.
func (c *API) finish(w http.ResponseWriter, r *http.Request, rl *requestLog, result string, err error) {
	if err == nil {
		rl.result = result
		return
	}
	if written(w) {
		rl.result = cmp.Or(result, metrics.ResultError)
		return
	}
	rl.result = metrics.ResultError
	item := rl.route == v2.RouteNameBlob || rl.route == v2.RouteNameManifest
	if se, ok := upstream.IsAnswer(err); ok && item && len(se.Body) == 0 && r.Method == http.MethodGet {
		// The refusal came from a HEAD, which has no body: ask once more
		// as the client did, so that it gets the origin's error body.
		resp, gerr := c.up.Do(r.Context(), rl.id.Origin(), upstream.Request{Method: http.MethodGet, Path: r.URL.EscapedPath(), Query: forwardQuery(r), Client: r.Header})
		if gerr != nil {
			if ge, ok := upstream.IsAnswer(gerr); ok && ge.Status == se.Status {
				err = gerr
			}
		} else {
			resp.Body.Close()
		}
	}
	if host := upstream.ErrorHost(err); host != "" {
		rl.upstream = host
	}
	if se, ok := upstream.IsAnswer(err); ok && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) {
		rl.result = metrics.ResultDenied
		if item {
			c.access.Forget(c.access.Cred(r, rl.id.Origin()), rl.id)
		}
	}
	var ue *upstream.UpstreamError
	_, answer := upstream.IsAnswer(err)
	switch {
	case answer || errors.As(err, &ue):
		if !errors.Is(err, context.Canceled) {
			c.log.WithError(err).WithField("repository", rl.repo).Debug("upstream refused or failed")
		}
		writeUpstreamError(w, r, err)
	case r.Context().Err() != nil && errors.Is(err, r.Context().Err()):
		// The client went away: nobody to answer.
	default:
		writeError(w, err)
	}
}
