package httpapi

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/opencontainers/go-digest"
)

// The hit path: most requests to a cache are GETs of small blobs it holds
// (a pull's configs and small layers), and their CPU was dominated by what
// surrounds the answer, not by the answer (`bench -only warm-load
// -cpuprofile`, 8 × 4 KiB, 64 clients: 4-6× nginx's CPU per request).
// ServeHit answers exactly the requests that the full path would answer
// from storage on a decision, with the same bytes and headers, and hands
// every other one back untouched:
//   - a GET or HEAD without Range, If-Range, If-None-Match, Cache-Control,
//     Pragma or Via (those take the full path's rules);
//   - whose request URI the full path parsed before into a repository,
//     registry and digest (hitRoutes: a pure function of the URI and the
//     configuration, so remembered; signed URLs are never remembered);
//   - linked in that repository by the link memo (store.Linked: the same
//     one-second rule as the full path's Stat);
//   - allowed to this credential on that repository by a decision younger
//     than authttl (access.AllowedByDecision, exactly as the full path;
//     denials are never remembered anywhere);
//   - and, for a GET, a body under minSendfile kept with its data file,
//     which still has a name (store.SmallData).

// hitRoutesMax bounds the remembered request URIs; past it they are
// forgotten all at once (each costs one trip through the full path).
const hitRoutesMax = 8192

// hitRoute is what the full path parsed from a request URI.
type hitRoute struct {
	repo     ident.Repo
	stored   string // repo.Stored().Name(): the link memo's key
	registry string // ident's origin of the registry ("" the default): metrics and the log
	ns       string // the ns the client sent: answered in OCI-Namespace
	dgst     digest.Digest
	digest   []string // header values, built once
	etag     []string
	length   atomic.Pointer[lengthHeader] // Content-Length, built at the first hit
}

// lengthHeader is a Content-Length header value for a size.
type lengthHeader struct {
	size int64
	hdr  []string
}

// contentLength is the Content-Length header value of size.
func (rt *hitRoute) contentLength(size int64) []string {
	if l := rt.length.Load(); l != nil && l.size == size {
		return l.hdr
	}
	l := &lengthHeader{size, []string{strconv.FormatInt(size, 10)}}
	rt.length.Store(l)
	return l.hdr
}

// hitRoutes maps request URIs to their routes.
type hitRoutes struct {
	mu sync.RWMutex
	m  map[string]*hitRoute
}

func (h *hitRoutes) get(uri string) *hitRoute {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.m[uri]
}

func (h *hitRoutes) put(uri string, rt *hitRoute) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil || len(h.m) >= hitRoutesMax {
		h.m = make(map[string]*hitRoute)
	}
	h.m[uri] = rt
}

// rememberHit records the route of a blob request the full path served
// from storage, for ServeHit.
func (c *API) rememberHit(r *http.Request, repo ident.Repo, nsr nsRequest, dgst digest.Digest) {
	if r.RequestURI == "" || isSigned(r) {
		return
	}
	c.hits.put(r.RequestURI, &hitRoute{
		repo: repo, stored: repo.Stored().Name(), registry: nsr.registry, ns: nsr.ns, dgst: dgst,
		digest: []string{dgst.String()}, etag: []string{`"` + dgst.String() + `"`},
	})
}

// Canonical header keys (textproto.CanonicalMIMEHeaderKey), set without
// canonicalizing them on every hit.
const (
	keyAPIVersion    = "Docker-Distribution-Api-Version"
	keyETag          = "Etag"
	keyCacheControl  = "Cache-Control"
	keyDigest        = "Docker-Content-Digest"
	keyContentType   = "Content-Type"
	keyAcceptRanges  = "Accept-Ranges"
	keyContentLength = "Content-Length"
	keyNamespace     = "Oci-Namespace"
)

// hitHeaders are the header values every hit answers, built once per API
// (never modified: net/http only reads them, and an append to one of them
// copies it, their capacity being their length).
type hitHeaders struct {
	apiVersion, cacheControl, octetStream, acceptRanges []string
}

func newHitHeaders() hitHeaders {
	one := func(v string) []string { return []string{v}[:1:1] }
	return hitHeaders{
		apiVersion: one("registry/2.0"), cacheControl: one("max-age=31536000"),
		octetStream: one("application/octet-stream"), acceptRanges: one("bytes"),
	}
}

// ServeHit answers r if it is a hit the fast path may answer (see above),
// and reports whether it did; false means nothing was written.
func (c *API) ServeHit(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	// The headers that send a request to the full path's rules.
	if h := r.Header; h["Range"] != nil || h["If-Range"] != nil || h["If-None-Match"] != nil ||
		h["Cache-Control"] != nil || h["Pragma"] != nil || h["Via"] != nil {
		return false
	}
	rt := c.hits.get(r.RequestURI)
	if rt == nil {
		return false
	}
	desc, ok := c.store.Linked(rt.stored, rt.dgst)
	if !ok || desc.Digest != rt.dgst || r.Method == http.MethodGet && desc.Size >= minSendfile {
		return false
	}
	if !c.access.AllowedByDecision(r, c.access.Cred(r, rt.repo.Origin()), rt.repo) {
		return false
	}
	start := c.now()
	ctx := r.Context()
	release, err := c.expiry.Hold(ctx, rt.dgst)
	if err != nil {
		return false
	}
	defer release()
	var body []byte
	if r.Method == http.MethodGet {
		if body, ok = c.store.SmallData(desc); !ok {
			return false
		}
	}
	h := w.Header()
	hh := &c.hitHdr
	h[keyAPIVersion] = hh.apiVersion
	if rt.ns != "" {
		h.Set(headerNamespace, rt.ns)
	}
	h[keyETag] = rt.etag
	h[keyCacheControl] = hh.cacheControl
	h[keyDigest] = rt.digest
	if desc.MediaType != "" {
		h.Set(keyContentType, desc.MediaType)
	} else {
		h[keyContentType] = hh.octetStream
	}
	h[keyAcceptRanges] = hh.acceptRanges
	h[keyContentLength] = rt.contentLength(desc.Size)
	w.WriteHeader(http.StatusOK)
	sw := statusWriter{status: http.StatusOK}
	if body != nil {
		n, err := w.Write(body)
		sw.bytes = int64(n)
		if err != nil {
			panic(http.ErrAbortHandler) // the client went: cut the response short
		}
	}
	c.pulled(r, rt.repo, rt.dgst, store.KindLayer)
	rl := requestLog{c: c, w: &sw, start: start, method: r.Method, route: v2.RouteNameBlob, result: metrics.ResultHit,
		registry: rt.registry, repo: rt.stored, id: rt.repo, digest: rt.dgst}
	rl.done()
	return true
}
