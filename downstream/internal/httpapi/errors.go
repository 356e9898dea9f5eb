package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
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
