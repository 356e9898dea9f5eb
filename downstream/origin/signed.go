package origin

import (
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/signature"
)

// blobPathRE matches /v2/<name>/blobs/<digest>.
func blobPathRE() *regexp.Regexp {
	return regexp.MustCompile(`^/v2/(` + reference.NameRegexp.String() + `)/blobs/(` + digest.DigestRegexp.String() + `)$`)
}

// serveSigned serves a blob GET or HEAD that carries one of this origin's
// own signatures, as a cache fetching a miss presents it: without the
// access controller, for exactly the signed repository and digest. It
// returns false, having written nothing, for any other request, which the
// app then serves (or challenges) as usual.
func (o *Origin) serveSigned(w http.ResponseWriter, r *http.Request) bool {
	if o.ns == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		return false
	}
	q := r.URL.Query()
	signed := false
	for k := range q {
		signed = signed || strings.HasPrefix(k, "cc-")
	}
	if !signed {
		return false
	}
	m := o.blobPath.FindStringSubmatch(r.URL.Path)
	if m == nil {
		return false // a signature allows blobs only: the usual flow
	}
	named, err := reference.WithName(m[1])
	if err != nil {
		return false
	}
	dgst, err := digest.Parse(m[2])
	if err != nil {
		return false
	}
	if err := o.verifySigned(r, named.Name(), dgst, q); err != nil {
		// The reason names claims, never the signature.
		o.log.WithField("repository", named.Name()).WithField("digest", dgst.String()).WithField("reason", err.Error()).Warn("signed URL refused")
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "signed URL refused: "+strings.TrimPrefix(err.Error(), "signature: "))
		return true
	}
	ctx := r.Context()
	repo, err := o.ns.Repository(ctx, named)
	if err == nil {
		w.Header().Set("Docker-Content-Digest", dgst.String())
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		// The linked blob store serves only what this repository links.
		err = repo.Blobs(ctx).ServeBlob(ctx, w, r, dgst)
	}
	switch {
	case err == nil:
	case errors.Is(err, distribution.ErrBlobUnknown):
		w.Header().Del("Docker-Content-Digest")
		writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
	default:
		o.log.WithError(err).WithField("repository", named.Name()).Warn("serving a signed blob")
		w.Header().Del("Docker-Content-Digest")
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "cannot serve the blob")
	}
	return true
}

// verifySigned accepts a signature by one of the published keys, issued
// for a cache this origin knows (the edge of a chain, whichever cache
// forwards it).
func (o *Origin) verifySigned(r *http.Request, repo string, dgst digest.Digest, q map[string][]string) error {
	v, err := signature.NewVerifier(o.cfg.PublishedKeys...)
	if err != nil {
		return err
	}
	name := ""
	if n := q[signature.ParamCache]; len(n) == 1 {
		name = n[0]
	}
	if _, known := o.knownCache(name); !known {
		name = "" // Verify then says which cache it names, once genuine
	}
	_, err = v.Verify(r.Method, repo, dgst.String(), q, o.now(), name)
	return err
}

// viaCache reports a request a content cache sent (its Via names one):
// redirecting it to a cache would send the cache's own fill back to a
// cache, the same one when the user pulls through their cache's address.
// A client forging the header only gets served here, as it may anyway.
func viaCache(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		// Case-insensitive: a proxy between may change the case.
		if strings.Contains(strings.ToLower(v), "content-cache-") {
			return true
		}
	}
	return false
}
