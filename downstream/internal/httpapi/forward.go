package httpapi

import (
	"io"
	"net/http"

	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
)

// forwardQuery is the client's query as it goes upstream: without any
// cc-* parameter, however written, or a pair that does not parse, so that
// no upstream's log gets a signature (signed blob fetches forward theirs
// on their own path, signed.go).
func forwardQuery(r *http.Request) string {
	q, _ := signature.RedactQuery(r.URL.RawQuery)
	return q
}

// forward passes a request to the upstream with the client's credentials and
// streams the answer back as it came: the ping (so that the origin's
// challenge reaches ping-first clients), tag lists (pagination intact) and
// the catalog.
func (c *API) forward(w http.ResponseWriter, r *http.Request, rl *requestLog) (string, error) {
	resp, err := c.up.Do(r.Context(), rl.registry, upstream.Request{Method: r.Method, Path: r.URL.EscapedPath(), Query: forwardQuery(r), Client: r.Header})
	ping := rl.route == v2.RouteNameBase
	if err != nil {
		if ping && c.pingStale(w, r, rl.registry, err) {
			return metrics.ResultStale, nil
		}
		if se, ok := upstream.IsAnswer(err); ok && ping && se.Status == http.StatusUnauthorized && r.Header.Get("Authorization") == "" {
			// How to authenticate, for clients that ping while the
			// origin is down (offlinegrace).
			c.access.Offline().SetChallenge(rl.registry, se.Header, se.Body)
		}
		return "", err
	}
	defer resp.Body.Close()
	rl.upstream = resp.Host.Host
	upstream.CopyResponseHeaders(w.Header(), resp.Header, resp.Host)
	w.WriteHeader(resp.StatusCode)
	if r.Method != http.MethodHead {
		if _, err := io.Copy(w, resp.Body); err != nil && r.Context().Err() == nil {
			// The status is out: cut the response, so that the client
			// never takes a short body for a whole one.
			c.log.WithError(err).WithField("path", r.URL.Path).Warn("forwarding an upstream answer broke off")
			panic(http.ErrAbortHandler)
		}
	}
	return metrics.ResultForwarded, nil
}
