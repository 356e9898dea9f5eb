package httpapi

import (
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxManifestSize bounds a manifest read from upstream (distribution's own
// limit for pushed manifests is 4 MiB).
const maxManifestSize = 4 << 20

// serveManifest answers GET and HEAD of a manifest. A tag is resolved at the
// origin on every request, so users always get the current image; the bytes
// of a digest are served from local storage once stored and allowed.
func (c *API) serveManifest(w http.ResponseWriter, r *http.Request, repo ident.Repo, ref string, rl *requestLog) (string, error) {
	ctx := r.Context()
	ck := c.access.Cred(r, repo.Origin())
	local, err := c.store.Repository(ctx, repo)
	if err != nil {
		return "", err
	}
	// Manifests are kept before their blobs: those are fetched when asked.
	ms, err := local.Manifests(ctx, storage.SkipLayerVerification())
	if err != nil {
		return "", err
	}
	// Expiry leaves the manifest alone from the moment its digest is known
	// until the request ends.
	var release func()
	defer func() {
		if release != nil {
			release()
		}
	}()
	hold := func(d digest.Digest) error {
		if release == nil {
			var err error
			if release, err = c.expiry.Hold(ctx, d); err != nil {
				return err // the client went away
			}
		}
		return nil
	}
	dgst, byDigest := digest.Digest(""), false
	if d, err := digest.Parse(ref); err == nil {
		dgst, byDigest = d, true
		rl.digest = d
		if err := hold(d); err != nil {
			return "", err
		}
		if c.access.AllowedByDecision(r, ck, repo) {
			if served, err := c.serveLocalManifest(w, r, ms, dgst); err != nil {
				return "", err
			} else if served {
				c.pulled(r, repo, dgst, store.KindManifest)
				return metrics.ResultHit, nil
			}
		}
	}
	path := "/v2/" + repo.Name() + "/manifests/" + ref
	// Stored but not (recently) allowed: a HEAD at the origin is enough.
	storedHere := false
	if byDigest {
		var err error
		// A storage failure only costs the fetch from upstream.
		if storedHere, err = ms.Exists(ctx, dgst); err != nil {
			c.log.WithError(err).WithField("digest", dgst).Warn("cannot look up a stored manifest; fetching it")
		}
	}
	// A GET of a tag this process has no answer for goes straight to the
	// origin's GET: the HEAD below only pays when the tag's manifest may
	// be held here, and on a cold pull it cost a round trip to the origin
	// before the manifest's own (and, refused, a third for the error's
	// body). The origin's 200 authorizes it as the HEAD's would.
	direct := !byDigest && r.Method == http.MethodGet && !c.mem.knowsTag(repo.Key(), ref)
	if direct {
		if _, known := c.access.Offline().Tag(repo.Key(), ref); known {
			direct = false
		}
	}
	if !direct && (r.Method == http.MethodHead || !byDigest || storedHere) {
		// A GET of a tag whose manifest is in memory asks the origin
		// whether the tag still names it: an unchanged tag costs the
		// origin no manifest read, and the cache no storage read.
		var known *manifestEntry
		etag := ""
		if !byDigest && r.Method == http.MethodGet {
			if known = c.mem.tagged(repo.Key(), ref); known != nil && known.asIs(r) {
				etag = `"` + known.digest.String() + `"`
			} else {
				known = nil
			}
		}
		resp, err := c.access.ConfirmUnless(ctx, r, path, repo, etag)
		if err != nil {
			if notModifiedUnknown(r, err, dgst) {
				writeNotModified(w)
				return metrics.ResultError, nil
			}
			if se, ok := upstream.IsAnswer(err); ok && se.Status == http.StatusNotFound && !byDigest {
				c.access.Offline().ForgetTag(repo.Key(), ref)
			}
			if result, ok := c.manifestStale(w, r, repo, ref, byDigest, storedHere, ms, hold, err); ok {
				rl.digest = result
				return metrics.ResultStale, nil
			}
			return "", err
		}
		rl.upstream = resp.Host.Host
		if !byDigest {
			if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
				c.access.Offline().Resolved(repo.Key(), ref, d)
			} else if known != nil && resp.StatusCode == http.StatusNotModified {
				c.access.Offline().Resolved(repo.Key(), ref, known.digest)
			}
		}
		if known != nil && resp.StatusCode == http.StatusNotModified {
			dgst = known.digest
			rl.digest = dgst
			if err := hold(dgst); err != nil {
				return "", err
			}
			if _, err := serveEntry(w, r, known); err != nil {
				return "", err
			}
			c.pulled(r, repo, dgst, store.KindManifest)
			return metrics.ResultHit, nil
		}
		if r.Method == http.MethodHead {
			if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil && manifestNotModified(r, d) {
				writeNotModified(w)
				return metrics.ResultForwarded, nil
			}
			upstream.CopyResponseHeaders(w.Header(), resp.Header, resp.Host)
			w.WriteHeader(resp.StatusCode)
			return metrics.ResultForwarded, nil
		}
		if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil && !byDigest {
			dgst = d
			rl.digest = d
			c.mem.resolved(repo.Key(), ref, d)
		}
		if dgst != "" {
			if err := hold(dgst); err != nil {
				return "", err
			}
			// The origin just allowed this request on this repository and
			// digest: the bytes may come from memory.
			if e := c.mem.get(dgst); e != nil {
				if _, err := serveEntry(w, r, e); err != nil {
					return "", err
				}
				c.pulled(r, repo, dgst, store.KindManifest)
				return metrics.ResultHit, nil
			}
			if served, err := c.serveLocalManifest(w, r, ms, dgst); err != nil {
				return "", err
			} else if served {
				c.pulled(r, repo, dgst, store.KindManifest)
				return metrics.ResultHit, nil
			}
			path = "/v2/" + repo.Name() + "/manifests/" + dgst.String()
		}
	}

	resp, err := c.up.Do(ctx, repo.Origin(), upstream.Request{Method: http.MethodGet, Path: path, Client: r.Header})
	if err != nil {
		if notModifiedUnknown(r, err, dgst) {
			writeNotModified(w)
			return metrics.ResultError, nil
		}
		return "", err
	}
	rl.upstream = resp.Host.Host
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	resp.Body.Close()
	if err == nil && len(body) > maxManifestSize {
		err = fmt.Errorf("manifest larger than %d bytes", maxManifestSize)
	}
	if err != nil {
		return "", &upstream.UpstreamError{Host: resp.Host.Host, Err: err}
	}
	c.access.Allow(ck, repo)
	if dgst == "" {
		dgst = digest.FromBytes(body)
		if d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
			dgst = d
		}
		rl.digest = dgst
	}
	if !dgst.Algorithm().Available() || dgst.Algorithm().FromBytes(body) != dgst {
		c.log.WithField("digest", dgst).WithField("upstream", resp.Host.Host).Warn("upstream manifest does not match its digest")
		return "", errcode.ErrorCodeUnavailable.WithMessage("upstream sent a manifest that does not match digest " + dgst.String())
	}
	if direct {
		c.mem.resolved(repo.Key(), ref, dgst)
		c.access.Offline().Resolved(repo.Key(), ref, dgst)
	}
	if err := hold(dgst); err != nil {
		return "", err
	}
	mediaType := resp.Header.Get("Content-Type")
	// Recorded before the manifest is stored, so that expiry knows of
	// every link it may have to remove.
	c.pulled(r, repo, dgst, store.KindManifest)
	c.storeManifest(r, ms, mediaType, body, dgst)
	writeManifest(w, r, mediaType, body, dgst)
	return metrics.ResultMiss, nil
}

// manifestStale serves a manifest stored in repo while no upstream answers
// (err), under offlinegrace: by digest when stored here, by tag when the
// origin resolved the tag less than offlinegrace ago. It returns the digest
// served.
func (c *API) manifestStale(w http.ResponseWriter, r *http.Request, repo ident.Repo, ref string, byDigest, storedHere bool, ms distribution.ManifestService, hold func(digest.Digest) error, err error) (digest.Digest, bool) {
	if written(w) || !c.canServeStale(r, repo, err) {
		return "", false
	}
	var dgst digest.Digest
	switch {
	case byDigest && storedHere:
		dgst, _ = digest.Parse(ref)
	case !byDigest:
		d, ok := c.access.Offline().Tag(repo.Key(), ref)
		if !ok {
			return "", false
		}
		if hold(d) != nil {
			return "", false
		}
		dgst = d
	default:
		return "", false
	}
	served, serr := serveStale(w, func() (bool, error) { return c.serveLocalManifest(w, r, ms, dgst) })
	if !served || serr != nil {
		return "", false
	}
	c.pulled(r, repo, dgst, store.KindManifest)
	return dgst, true
}

// storeManifest keeps a verified manifest. Its blobs need not be stored:
// they are fetched when asked for. Failing to store only costs a refetch.
func (c *API) storeManifest(r *http.Request, ms distribution.ManifestService, mediaType string, body []byte, dgst digest.Digest) {
	ctx := r.Context()
	m, _, err := distribution.UnmarshalManifest(mediaType, body)
	if err == nil {
		c.mem.put(entryOf(m, dgst))
		var got digest.Digest
		got, err = ms.Put(ctx, m)
		if err == nil && got != dgst {
			err = fmt.Errorf("stored as %s", got)
		}
		if err == nil {
			c.expiry.Stored(dgst, int64(len(body)))
		}
	}
	if err != nil {
		c.log.WithError(err).WithField("digest", dgst).Warn("cannot store manifest locally")
	}
}

// serveLocalManifest serves a manifest stored in this repository; false if
// there is none, an error to answer if the client's Accept refuses it.
func (c *API) serveLocalManifest(w http.ResponseWriter, r *http.Request, ms distribution.ManifestService, dgst digest.Digest) (bool, error) {
	m, err := ms.Get(r.Context(), dgst)
	if err != nil {
		return false, nil
	}
	e := entryOf(m, dgst)
	if e == nil {
		return false, nil // unreadable or damaged: fetched again
	}
	c.mem.put(e)
	return serveEntry(w, r, e)
}

// serveEntry answers r with the manifest e as distribution's GetManifest
// answers with a stored one; an error to answer if the client's Accept
// refuses it.
func serveEntry(w http.ResponseWriter, r *http.Request, e *manifestEntry) (bool, error) {
	if manifestNotModified(r, e.digest) {
		writeNotModified(w)
		return true, nil
	}
	if e.oci && !acceptsOCIManifest(r) {
		// distribution's GetManifest refuses it with these words. An OCI
		// index passes whatever the Accept: it is neither of the types that
		// GetManifest checks.
		return false, errcode.ErrorCodeManifestUnknown.WithMessage("OCI manifest found, but accept header does not support OCI manifests")
	}
	writeManifest(w, r, e.mediaType, e.payload, e.digest)
	return true, nil
}

func acceptsOCIManifest(r *http.Request) bool { return accepts(r, v1.MediaTypeImageManifest) }

// accepts parses Accept as distribution's GetManifest does:
// comma-separated media types, parameters (q=) ignored.
func accepts(r *http.Request, mediaType string) bool {
	for _, h := range r.Header["Accept"] {
		for mt := range strings.SplitSeq(h, ",") {
			if mt, _, err := mime.ParseMediaType(mt); err == nil && mt == mediaType {
				return true
			}
		}
	}
	return false
}

// manifestNotModified reports whether If-None-Match names dgst the way
// distribution compares it: one header value equal to the digest, quoted
// or not (no lists, no weak tags, no *).
func manifestNotModified(r *http.Request, dgst digest.Digest) bool {
	for _, v := range r.Header["If-None-Match"] {
		if v == dgst.String() || v == `"`+dgst.String()+`"` {
			return true
		}
	}
	return false
}

// notModifiedUnknown reports whether the origin, asked for the digest dgst
// without If-None-Match, answered 404 where, asked with it, it answers 304:
// distribution compares If-None-Match before it looks the digest up, and a
// 404 means the credential passed authorization.
func notModifiedUnknown(r *http.Request, err error, dgst digest.Digest) bool {
	se, ok := upstream.IsAnswer(err)
	return ok && se.Status == http.StatusNotFound && dgst != "" && manifestNotModified(r, dgst)
}

// writeNotModified answers 304 with no header of the manifest, as
// distribution does.
func writeNotModified(w http.ResponseWriter) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	w.WriteHeader(http.StatusNotModified)
}

func writeManifest(w http.ResponseWriter, r *http.Request, mediaType string, body []byte, dgst digest.Digest) {
	if manifestNotModified(r, dgst) {
		writeNotModified(w)
		return
	}
	h := w.Header()
	h.Set("Docker-Distribution-API-Version", "registry/2.0")
	h.Set("Content-Type", mediaType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("ETag", `"`+dgst.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
