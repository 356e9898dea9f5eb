// Package httpapi serves the registry API of the cache: the router, the
// handlers of blobs and manifests, what is forwarded to the origin, the
// refusal of writes, and the one place that writes errors and logs and
// counts each request's result.
package httpapi

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/downstream/internal/expiry"
	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/keyring"
	"github.com/content-cache/content-cache/downstream/internal/logline"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/distribution/reference"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// API serves the /v2/ routes of one cache instance.
type API struct {
	cfg       config.Config
	up        *upstream.Set
	access    *access.Access
	store     *store.Store
	fills     *fill.Fills
	expiry    *expiry.Expiry // nil without blobttl
	metrics   *metrics.Metrics
	log       *logrus.Entry
	reqLog    *logline.Logger // the request lines, through log
	now       func() time.Time
	router    *mux.Router
	redirects bool             // storage.redirect is on (see Deps.Redirects)
	keys      *keyring.Keyring // the origin's keys for signed URLs; nil without signing
	mem       *manifestMemory  // manifests by digest, and what tags resolved to

	blobRoute   blobRoute      // the blob route without the router (route.go)
	hits        hitRoutes      // request URIs of hits, for ServeHit (hit.go)
	hitHdr      hitHeaders     // header values of every hit
	prefetching atomic.Int64   // prefetched fills in flight (prefetch.go)
	bg          sync.WaitGroup // prefetch goroutines
}

// Deps are what the API serves from.
type Deps struct {
	Config   config.Config
	Upstream *upstream.Set
	Access   *access.Access
	Store    *store.Store
	Fills    *fill.Fills
	Expiry   *expiry.Expiry
	Metrics  *metrics.Metrics
	Log      *logrus.Entry
	Now      func() time.Time
	// Redirects: distribution's storage.redirect is on, so a hit on a
	// driver that can redirect answers 307 to the storage.
	Redirects bool
	// Keys verify the origin's signed URLs (nil without cfg.Signing).
	Keys *keyring.Keyring
}

// New is the API of one cache instance.
func New(d Deps) *API {
	router := newRouter()
	return &API{
		blobRoute: newBlobRoute(router, v2.RouteNameBlob),
		cfg:       d.Config, up: d.Upstream, access: d.Access, store: d.Store, fills: d.Fills, expiry: d.Expiry,
		metrics: d.Metrics, log: d.Log, reqLog: logline.New(d.Log), now: d.Now, router: router, redirects: d.Redirects,
		keys: d.Keys, mem: newManifestMemory(d.Config.BlobTTL, d.Now), hitHdr: newHitHeaders(),
	}
}

// SetRedirects says whether storage.redirect is on; before serving only.
func (c *API) SetRedirects(on bool) { c.redirects = on }

// Handler returns the cache's HTTP handler: it serves the /v2/ API and hands
// everything else (health, metrics, /) to next.
func (c *API) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.ServeHit(w, r) {
			return
		}
		var match mux.RouteMatch
		// match.Handler is set only for the redirects of distribution's
		// router (StrictSlash: a trailing slash too many or missing): the
		// app answers them as the origin does, without any upstream.
		if r.URL.Path == PrefetchPath {
			c.servePrefetchPost(w, r)
			return
		}
		if !c.blobRoute.match(r.URL.Path, &match) && (!c.router.Match(r, &match) || match.Route == nil || match.Handler != nil) {
			// Distribution's app logs the URI of everything it answers
			// (a trailing '/', '//', 'BLOBS', ...): never a signature.
			next.ServeHTTP(w, signature.RedactRequest(r))
			return
		}
		route := match.Route.GetName()
		if c.up.Looped(r) {
			c.log.WithFields(map[string]any{"path": r.URL.Path, "via": r.Header.Values("Via")}).Error("request loop: this request already passed this cache; check the upstreams of the chained caches")
			writeError(w, errLoopDetected.WithMessage("request loop: the request already passed this content cache ("+c.up.Via()+"); the upstreams of the chained caches form a loop"))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			c.refuseWrite(w, r, route)
			return
		}
		r = withForwardedFor(r)
		sw := &statusWriter{ResponseWriter: w}
		w = sw
		rl := c.newRequestLog(sw, r, route)
		defer rl.done()
		nsr, err := c.registryOf(r)
		if nsr.ns != "" {
			w.Header().Set(headerNamespace, nsr.ns)
		}
		if err != nil {
			rl.registry = unknownRegistry
			c.finish(w, r, rl, "", err)
			return
		}
		rl.registry = nsr.registry
		switch route {
		case v2.RouteNameBase, v2.RouteNameCatalog, v2.RouteNameTags, metrics.KindReferrers:
			// Answered by the origin, with the client's credentials: the
			// ping carries the origin's challenge, and the catalog must not
			// reveal what the cache holds.
			if name := match.Vars["name"]; name != "" && nsr.ns == "" {
				// A path prefix naming a registry (see prefixed): its
				// upstream is asked for the name without it.
				if named, err := reference.WithName(name); err == nil {
					if reg, rest, ok := c.prefixed(named); ok {
						rl.registry = reg
						r = withPath(r, "/v2/"+rest.Name()+strings.TrimPrefix(r.URL.Path, "/v2/"+name))
					}
				}
			}
			result, err := c.forward(w, r, rl)
			c.finish(w, r, rl, result, err)
		case v2.RouteNameBlob, v2.RouteNameManifest:
			named, err := reference.WithName(match.Vars["name"])
			if err != nil {
				c.finish(w, r, rl, "", errNameInvalid(match.Vars["name"], err))
				return
			}
			if reg, rest, ok := c.prefixed(named); ok && nsr.registry == "" {
				if nsr.ns != "" {
					// The default registry named by ns: its repository of
					// this name would meet reg's stored repositories.
					c.finish(w, r, rl, "", errReservedName(named.Name(), reg))
					return
				}
				nsr.registry, named, rl.registry = reg, rest, reg
			}
			repo, err := ident.At(nsr.registry, named)
			if err != nil {
				c.finish(w, r, rl, "", errNameInvalid(match.Vars["name"], err))
				return
			}
			rl.repo, rl.id = repo.String(), repo
			var result string
			if route == v2.RouteNameBlob {
				var dgst digest.Digest
				if dgst, err = digest.Parse(match.Vars["digest"]); err != nil {
					c.finish(w, r, rl, "", errDigestInvalid(match.Vars["digest"]))
					return
				}
				rl.digest = dgst
				result, err = c.serveBlob(w, r, repo, dgst, rl)
				if err == nil && result == metrics.ResultHit && sw.status == http.StatusOK {
					c.rememberHit(r, repo, nsr, dgst)
				}
			} else {
				result, err = c.serveManifest(w, r, repo, match.Vars["reference"], rl)
				if err == nil && sw.status == http.StatusOK && (result == metrics.ResultHit || result == metrics.ResultMiss) {
					c.prefetchManifest(r, repo, rl.digest)
				}
			}
			c.finish(w, r, rl, result, err)
		default:
			// Upload routes answer GET for upload status: there are none.
			c.refuseWrite(w, r, route)
		}
	})
}

// withPath returns r for another path (a shallow copy).
func withPath(r *http.Request, path string) *http.Request {
	r2 := r.WithContext(r.Context())
	u := *r.URL
	u.Path, u.RawPath = path, ""
	r2.URL = &u
	return r2
}

// withForwardedFor returns r with the client's address appended to
// X-Forwarded-For, as a reverse proxy does, so that the upstreams see the
// address the cache saw as the last entry. What the client sent is kept but
// never trusted: it is whatever the client chose to write.
func withForwardedFor(r *http.Request) *http.Request {
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || ip == "" {
		return r // not a network address (a test handler); nothing to add
	}
	r2 := r.WithContext(r.Context()) // a shallow copy: the client's request stays as it came
	r2.Header = r.Header.Clone()
	if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
		ip = strings.Join(prior, ", ") + ", " + ip
	}
	r2.Header.Set("X-Forwarded-For", ip)
	return r2
}

// newRouter is distribution's v2 router plus the referrers route (the OCI
// referrers API, which distribution's router lacks: it is forwarded to the
// origin like a tag list).
func newRouter() *mux.Router {
	r := v2.RouterWithPrefix("")
	r.Path("/v2/{name:" + reference.NameRegexp.String() + "}/referrers/{digest:" + digest.DigestRegexp.String() + "}").Name(metrics.KindReferrers)
	return r
}

// refuseWrite answers every push, mount and delete: the cache is read-only
// and only its own expiry removes content.
func (c *API) refuseWrite(w http.ResponseWriter, r *http.Request, route string) {
	c.log.WithFields(map[string]any{"method": r.Method, "route": route, "path": r.URL.Path}).Info("refused write to read-only cache")
	writeError(w, errcode.ErrorCodeUnsupported.WithMessage(
		"content-cache is a read-only cache of "+c.up.Default().Origin().String()+": push to and delete from the origin registry instead"))
}
