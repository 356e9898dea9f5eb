package origin

import (
	"context"
	"net/http"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/signature"
)

// userNameKey is where distribution's app puts the authorized user's name
// in the request context (registry/handlers/context.go), after its access
// controller allowed the request.
const userNameKey = "auth.user.name"

// namespace wraps the app's storage so that blob GETs can be redirected.
// Everything else passes through untouched.
type namespace struct {
	distribution.Namespace
	o *Origin
}

func (n namespace) Repository(ctx context.Context, name reference.Named) (distribution.Repository, error) {
	r, err := n.Namespace.Repository(ctx, name)
	if err != nil {
		return nil, err
	}
	return repository{Repository: r, o: n.o}, nil
}

type repository struct {
	distribution.Repository
	o *Origin
}

func (r repository) Blobs(ctx context.Context) distribution.BlobStore {
	return blobStore{BlobStore: r.Repository.Blobs(ctx), o: r.o, repo: r.Named().Name()}
}

type blobStore struct {
	distribution.BlobStore
	o    *Origin
	repo string
}

// ServeBlob is reached only after the app's access controller allowed the
// pull and the blob was found (handlers/blob.go stats it first), so a
// redirect never reveals more than the origin itself would serve.
func (b blobStore) ServeBlob(ctx context.Context, w http.ResponseWriter, r *http.Request, dgst digest.Digest) error {
	if r.Method != http.MethodGet {
		return b.BlobStore.ServeBlob(ctx, w, r, dgst)
	}
	if loc, ok := b.o.redirect(ctx, r, b.repo, dgst); ok {
		w.Header().Set("Location", loc)
		// The URL is this user's, for minutes: no shared cache may keep it.
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusTemporaryRedirect)
		return nil
	}
	return b.BlobStore.ServeBlob(ctx, w, r, dgst)
}

// redirect returns the signed cache URL for the request, or false to serve
// it directly; it counts either way.
func (o *Origin) redirect(ctx context.Context, r *http.Request, repo string, dgst digest.Digest) (string, bool) {
	if viaCache(r) { // see signed.go
		o.metrics.direct.WithLabelValues(directViaCache).Inc()
		return "", false
	}
	user, _ := ctx.Value(userNameKey).(string)
	name, err := o.assignment(ctx, user, r)
	reason := ""
	var cache Cache
	switch {
	case err != nil:
		o.log.WithError(err).WithField("user", user).Warn("reading the user's content cache; serving directly")
		reason = directStoreError
	case name == "":
		reason = directUnassigned
	default:
		var ok bool
		if cache, ok = o.knownCache(name); !ok {
			reason = directUnknown
		} else if !o.isHealthy(name) {
			reason = directUnhealthy
		}
	}
	if reason != "" {
		o.metrics.direct.WithLabelValues(reason).Inc()
		return "", false
	}
	q := o.cfg.Signer.Sign(signature.Claims{
		Method:     http.MethodGet,
		Repository: repo,
		Digest:     dgst.String(),
		Expiry:     o.now().Add(o.cfg.SignatureTTL),
		Cache:      cache.Name,
	})
	u := cache.Host + "/v2/" + repo + "/blobs/" + dgst.String() + "?" + q.Encode()
	o.metrics.redirects.WithLabelValues(cache.Name).Inc()
	return u, true
}
