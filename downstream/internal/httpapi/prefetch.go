package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/distribution/v3/manifest/schema2"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/signature"
)

// Prefetch on manifest (option prefetch): a client that got an image
// manifest asks for its config and layers next, three at a time over a
// long round trip. The cache starts their fills as soon as it has served
// the manifest, with that request's credential and repository, so that the
// client's blob requests join fills already running.
//
// A prefetched fill is a fill like any other, except that the origin's 200
// to it authorizes nobody (fill.Asker.Prefetch): each blob request is
// authorized on its own, by decision or by the origin, as without
// prefetch. An index prefetches nothing: the platform's manifest follows.
// The fills start after the manifest's response is written, in a goroutine
// of their own, bounded per manifest and in total.
//
// PrefetchPath is the transparent caches' form: the cache never sees the
// manifest, so the origin POSTs the signed URLs of its blobs here, and
// the cache starts fills with those signatures. Only signatures valid for
// this cache are accepted.

// PrefetchPath is where the origin POSTs the signed blob URLs of a
// manifest it served to a user assigned to this cache.
const PrefetchPath = "/_content-cache/prefetch"

// PrefetchRequest is the body of a POST to PrefetchPath: the signed URLs
// (path and query, any scheme and host ignored) of the blobs to fetch.
type PrefetchRequest struct {
	Blobs []string `json:"blobs"`
}

// maxPrefetchBody bounds a POST to PrefetchPath.
const maxPrefetchBody = 256 << 10

// prefetchManifest starts, without delaying r's response, fills for the
// config and layers of the image manifest dgst that r was just served.
func (c *API) prefetchManifest(r *http.Request, repo ident.Repo, dgst digest.Digest) {
	if !c.cfg.Prefetch.Enabled || r.Method != http.MethodGet || dgst == "" {
		return
	}
	e := c.mem.get(dgst)
	if e == nil {
		return
	}
	ck := c.access.Cred(r, repo.Origin())
	hdr := r.Header.Clone()
	ctx := context.WithoutCancel(r.Context())
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		blobs := imageBlobs(e.mediaType, e.payload)
		var askers []*fill.Asker
		for range blobs {
			askers = append(askers, &fill.Asker{Cred: ck, Repo: repo, Hdr: hdr, Prefetch: true})
		}
		c.prefetch(ctx, blobs, askers)
	}()
}

// imageBlobs are the config and layers of an image manifest (OCI or
// Docker schema 2), in order; none for anything else (an index, a list).
// Layers with URLs (non-distributable) are not at the origin: left out.
func imageBlobs(mediaType string, payload []byte) []digest.Digest {
	m, _, err := distribution.UnmarshalManifest(mediaType, payload)
	if err != nil {
		return nil
	}
	switch m.(type) {
	case *ocischema.DeserializedManifest, *schema2.DeserializedManifest:
	default:
		return nil
	}
	var out []digest.Digest
	for _, d := range m.References() {
		if len(d.URLs) == 0 && d.Digest.Validate() == nil {
			out = append(out, d.Digest)
		}
	}
	return out
}

// prefetch starts a fill with askers[i] for each of blobs[i] not stored,
// at most PerManifest of them, while fewer than Total prefetched fills
// are in flight. A blob being filled already is left to its fill.
func (c *API) prefetch(ctx context.Context, blobs []digest.Digest, askers []*fill.Asker) {
	started := 0
	for i, dgst := range blobs {
		if started >= c.cfg.Prefetch.PerManifest {
			return
		}
		if _, err := c.store.Stat(ctx, dgst); err == nil {
			continue // stored: a request links and serves it
		}
		if c.prefetching.Add(1) > int64(c.cfg.Prefetch.Total) {
			c.prefetching.Add(-1)
			return
		}
		release, err := c.expiry.Hold(ctx, dgst)
		if err != nil {
			c.prefetching.Add(-1)
			return
		}
		// Not enlisted in a fill already running (allowed false): that
		// fill has its own askers.
		f, leader := c.fills.Join(ctx, askers[i], dgst, false, false)
		release()
		if f == nil || !leader {
			c.prefetching.Add(-1)
			continue
		}
		started++
		c.bg.Add(1)
		go func() {
			defer c.bg.Done()
			defer c.prefetching.Add(-1)
			_, _ = f.Wait(context.WithoutCancel(ctx), func(s fill.State) bool { return s.Finished })
		}()
	}
}

// servePrefetchPost answers a POST of signed blob URLs (PrefetchRequest):
// 202 once the fills are started (or the blobs found stored), 401 and
// nothing started if any URL's signature is not valid for this cache.
func (c *API) servePrefetchPost(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, errcode.ErrorCodeUnsupported.WithMessage("POST the signed blob URLs to prefetch"))
		return
	}
	if c.cfg.Signing == nil || c.keys == nil || !c.cfg.Prefetch.Enabled {
		writeError(w, errcode.ErrorCodeUnsupported.WithMessage("this content cache does not prefetch signed URLs (it needs the signing and prefetch options)"))
		return
	}
	var req PrefetchRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPrefetchBody+1))
	if err == nil && len(body) > maxPrefetchBody {
		err = errors.New("body too large")
	}
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		writeError(w, errcode.ErrorCodeUnsupported.WithMessage("cannot read the prefetch request: "+err.Error()))
		return
	}
	ctx := context.WithoutCancel(r.Context())
	var blobs []digest.Digest
	var askers []*fill.Asker
	for _, raw := range req.Blobs {
		repo, dgst, q, err := c.verifyPrefetchURL(r.Context(), raw)
		if err != nil {
			c.log.WithField("reason", err.Error()).Warn("prefetch refused: a signed URL is not valid for this cache")
			writeError(w, errcode.ErrorCodeUnauthorized.WithMessage("signed URL refused: "+strings.TrimPrefix(err.Error(), "signature: ")))
			return
		}
		blobs = append(blobs, dgst)
		// As serveSigned's: the signature stands for the client.
		askers = append(askers, &fill.Asker{Cred: c.access.KeyOf("cc-signed " + q), Repo: repo, Hdr: http.Header{}, Query: q, Prefetch: true})
	}
	w.WriteHeader(http.StatusAccepted)
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		c.prefetch(ctx, blobs, askers)
	}()
}

// WaitPrefetch waits for the prefetch goroutines, once the fills were
// closed (Cache.Close).
func (c *API) WaitPrefetch() { c.bg.Wait() }

// verifyPrefetchURL checks one signed blob URL as serveSigned checks a
// signed GET, and returns its repository, digest and the query to fetch
// with.
func (c *API) verifyPrefetchURL(ctx context.Context, raw string) (ident.Repo, digest.Digest, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return ident.Repo{}, "", "", errors.New("not a URL")
	}
	var match struct{ name, dgst string }
	if rest, ok := strings.CutPrefix(u.Path, "/v2/"); ok {
		if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
			match.name, match.dgst = rest[:i], rest[i+len("/blobs/"):]
		}
	}
	named, err := reference.WithName(match.name)
	if err != nil {
		return ident.Repo{}, "", "", errors.New("not a blob URL")
	}
	dgst, err := digest.Parse(match.dgst)
	if err != nil {
		return ident.Repo{}, "", "", errors.New("not a blob URL")
	}
	repo := ident.Of(named)
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, (&url.URL{Path: u.Path, RawQuery: u.RawQuery}).String(), nil)
	if err != nil {
		return ident.Repo{}, "", "", err
	}
	if r.URL.Query().Get(signature.ParamSig) == "" {
		return ident.Repo{}, "", "", errors.New("not signed")
	}
	q, err := c.verifySigned(r, repo, dgst)
	return repo, dgst, q, err
}
