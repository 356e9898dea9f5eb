package httpapi

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
)

// serveLocal serves a blob stored and linked in the repository of blobs
// (Range, If-None-Match and HEAD included). It returns false, having
// written nothing, when it is not (never linked, gone because another cache
// sharing the storage expired it, or unreadable): the caller fetches it.
//
// The bytes come straight from the storage driver (copyBlob: sendfile or a
// buffer). distribution's ServeBlob reads through a 4 MiB
// buffer allocated per request (1.6 ms and 4.2 MB per 4 KiB hit,
// BenchmarkServeHit); it still serves what this does not handle: several
// ranges and unsatisfiable ones, so that those answers stay exactly
// distribution's.
// Redirects to the storage (storage.redirect on and a driver that offers a
// URL) are answered here as distribution answers them.
func (c *API) serveLocal(w http.ResponseWriter, r *http.Request, blobs distribution.BlobStore, dgst digest.Digest) bool {
	ctx := r.Context()
	desc, err := blobs.Stat(ctx, dgst) // the repository's link and the data
	if err != nil {
		return false // not here, or storage failing: fetching still works
	}
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	start, end, ranged := int64(0), desc.Size, false
	if rng := honoredRange(r, desc.Digest); rng != "" {
		var ok bool
		if start, end, ok = parseRange(rng, desc.Size); !ok {
			return c.serveBlobStore(w, r, blobs, dgst)
		}
		ranged = true
	}
	// With storage.redirect off, distribution would serve the bytes itself
	// whatever the driver offers: so does this, faster.
	// The filesystem driver read directly never redirects: not asked (a
	// twentieth of a small hit's CPU went to asking it through its layers).
	if c.redirects && !c.store.Direct() {
		u, err := c.store.RedirectURL(r, desc.Digest)
		if err != nil {
			return c.serveBlobStore(w, r, blobs, dgst)
		}
		if u != "" {
			// distribution's redirect (linkedBlobStore and blobServer's
			// ServeBlob), without their second stat of link and data.
			if desc.MediaType != "" {
				w.Header().Set("Content-Type", desc.MediaType)
			}
			http.Redirect(w, r, u, http.StatusTemporaryRedirect)
			return true
		}
	}
	etag := `"` + desc.Digest.String() + `"`
	notModified := etagMatch(r.Header.Get("If-None-Match"), etag)
	var body io.ReadCloser
	if r.Method == http.MethodGet && !notModified {
		body, err = c.store.Reader(ctx, desc.Digest, start)
		if err != nil {
			// Nothing is written yet: fetching still works, and a storage
			// failure is neither a hit nor a pull.
			if !store.IsNotFound(err) {
				c.log.WithError(err).WithField("digest", dgst).Warn("cannot read a stored blob; fetching it instead")
			}
			return false
		}
		defer body.Close()
	}

	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "max-age=31536000") // content-addressed: never changes
	h.Set("Docker-Content-Digest", desc.Digest.String())
	h.Set("Content-Type", cmp.Or(desc.MediaType, "application/octet-stream"))
	if notModified {
		w.WriteHeader(http.StatusNotModified)
		return true
	}
	h.Set("Accept-Ranges", "bytes")
	status := http.StatusOK
	if ranged {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, desc.Size))
	}
	h.Set("Content-Length", strconv.FormatInt(end-start, 10))
	w.WriteHeader(status)
	if body == nil { // HEAD
		return true
	}
	if n, err := copyBlob(w, r, body, end-start); err != nil || n != end-start {
		// Headers are out: all that is left is to cut the response short.
		panic(http.ErrAbortHandler)
	}
	return true
}

// copyBufferSize bounds the buffer of a copy through user space. Over TLS
// on loopback, 16 KiB to 1 MiB buffers and net/http's own 32 KiB copy were
// within the noise of each other (390-620 MB/s, AES-GCM dominates); on
// plain loopback 256 KiB took the least CPU (client and server) of 64 KiB
// to 4 MiB.
const copyBufferSize = 256 << 10

// minSendfile is the smallest body handed to sendfile: below it, the
// headers' own write and the sendfile call cost more than copying the body
// into the response's buffer, which goes out with the headers in one write.
const minSendfile = 32 << 10

// copyBuffers are the buffers of copies through user space.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// copyBlob writes n bytes of a stored blob's data to w. A file (the
// filesystem driver's reader) going to a client over plain HTTP/1 goes to
// net/http's ReadFrom, which hands it to sendfile: no copy through user
// space, on loopback as across a network. Under 16 and 64 concurrent
// clients that is what costs the server least (`bench -only warm-load`,
// BENCHMARKS.md: nginx's CPU per byte within 1.5x, where writing from a
// memory mapping, once chosen on loopback from one client's wall time,
// cost 9 to 34 times nginx's: mappings, page faults and unmaps under
// concurrency). TLS (which sendfile cannot reach), HTTP/2, the other
// drivers' readers and bodies under minSendfile are copied through a
// pooled buffer.
func copyBlob(w http.ResponseWriter, r *http.Request, body io.Reader, n int64) (int64, error) {
	src := io.LimitReader(body, n) // also hides *os.File's WriteTo, which would copy through 32 KiB
	if _, file := body.(*os.File); file && r.TLS == nil && n >= minSendfile && readsFrom(w) {
		return w.(io.ReaderFrom).ReadFrom(src)
	}
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	// writerOnly keeps io.CopyBuffer from handing src to a ReadFrom.
	return io.CopyBuffer(writerOnly{w}, src, (*bp)[:min(copyBufferSize, max(n, 1))])
}

// readsFrom reports whether w's ReadFrom reaches net/http's (through the
// request log's writer and the wrappers of otelhttp, which keep it).
func readsFrom(w http.ResponseWriter) bool {
	if sw, ok := w.(*statusWriter); ok {
		return sw.readsFrom()
	}
	_, ok := w.(io.ReaderFrom)
	return ok
}

type writerOnly struct{ io.Writer }

// serveBlobStore serves through distribution's blob store.
func (c *API) serveBlobStore(w http.ResponseWriter, r *http.Request, blobs distribution.BlobStore, dgst digest.Digest) bool {
	err := blobs.ServeBlob(r.Context(), w, r, dgst)
	if err == nil {
		return true
	}
	if !written(w) {
		// distribution fails before writing when the blob is gone or
		// storage fails: fetching still works.
		if !errors.Is(err, distribution.ErrBlobUnknown) {
			c.log.WithError(err).WithField("digest", dgst).Warn("cannot serve a stored blob; fetching it instead")
		}
		return false
	}
	// Headers are out: all that is left is to cut the response short.
	panic(http.ErrAbortHandler)
}

// written reports whether a response was started; a writer that cannot
// tell counts as started.
func written(w http.ResponseWriter) bool {
	sw, ok := w.(*statusWriter)
	return !ok || sw.status != 0
}

// etagMatch reports whether an If-None-Match header lists etag (or *).
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}
