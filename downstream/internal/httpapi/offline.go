package httpapi

import (
	"net/http"
	"strconv"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/ident"
)

// staleWarning marks an answer served while no upstream answered
// (offlinegrace): RFC 9111's 111, revalidation failed.
const staleWarning = `111 content-cache "Revalidation Failed: no upstream answered; served from the cache under offlinegrace"`

// canServeStale reports whether a request that met err may be answered
// from storage: offlinegrace is on, err means no upstream answered at all
// (not a refusal, not the client going away), the request does not ask for
// a fresh answer (a chained cache), and the origin allowed its credential
// on repo less than offlinegrace ago.
func (c *API) canServeStale(r *http.Request, repo ident.Repo, err error) bool {
	off := c.access.Offline()
	return off != nil && r.Context().Err() == nil && access.Outage(err) && !access.WantsFresh(r) &&
		off.Allowed(c.access.Cred(r, repo.Origin()), repo.Key())
}

// serveStale answers with serve, which reports whether it wrote an answer,
// marked with the Warning header; the header goes again if it wrote nothing.
func serveStale(w http.ResponseWriter, serve func() (bool, error)) (bool, error) {
	w.Header().Set("Warning", staleWarning)
	served, err := serve()
	if !served && !written(w) {
		w.Header().Del("Warning")
	}
	return served, err
}

// pingStale answers a ping while no upstream answers: 200 to a credential
// the origin allowed on some repository less than offlinegrace ago, the
// origin's last challenge to anybody else (so that a client learns how to
// authenticate), else nothing (false).
func (c *API) pingStale(w http.ResponseWriter, r *http.Request, registry string, err error) bool {
	off := c.access.Offline()
	if off == nil || r.Context().Err() != nil || !access.Outage(err) || access.WantsFresh(r) {
		return false
	}
	h := w.Header()
	if off.Known(c.access.Cred(r, registry), registry) {
		h.Set("Docker-Distribution-API-Version", "registry/2.0")
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", "2")
		h.Set("Warning", staleWarning)
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte("{}"))
		}
		return true
	}
	ch, ok := off.LastChallenge(registry)
	if !ok {
		return false
	}
	for k, vs := range ch.Header {
		h[k] = vs
	}
	h.Set("Content-Length", strconv.Itoa(len(ch.Body)))
	h.Set("Warning", staleWarning)
	w.WriteHeader(http.StatusUnauthorized)
	if r.Method != http.MethodHead {
		_, _ = w.Write(ch.Body)
	}
	return true
}
