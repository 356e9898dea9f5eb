package httpapi

import (
	"io"
	"net/http"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/logline"

	"github.com/content-cache/content-cache/downstream/internal/metrics"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/opencontainers/go-digest"
)

// requestLog collects what one request did, for one info line at its end
// and the request metrics. It never holds credentials: no header, no query,
// only the route, the repository and the digest.
type requestLog struct {
	c        *API
	start    time.Time
	method   string
	route    string
	registry string     // ident's origin of the registry the request names ("" the default), or unknownRegistry
	repo     string     // for the log
	id       ident.Repo // of blob and manifest routes
	digest   digest.Digest
	result   string
	upstream string
	w        *statusWriter
}

func (c *API) newRequestLog(w *statusWriter, r *http.Request, route string) *requestLog {
	return &requestLog{c: c, w: w, start: c.now(), method: r.Method, route: route, result: metrics.ResultError}
}

func (rl *requestLog) done() {
	var f [10]logline.Field
	f[0], f[1], f[2] = logline.String("method", rl.method), logline.String("kind", rl.route), logline.String("result", rl.result)
	f[3], f[4] = logline.Int("status", int64(rl.w.status)), logline.Int("bytes", rl.w.bytes)
	f[5] = logline.String("duration", rl.c.now().Sub(rl.start).String())
	n := 6
	add := func(k, v string) {
		if v != "" {
			f[n] = logline.String(k, v)
			n++
		}
	}
	add("registry", rl.c.registryLabel(rl.registry))
	add("repository", rl.repo)
	add("digest", rl.digest.String())
	add("upstream", rl.upstream)
	rl.c.reqLog.Info("request", f[:n]...)

	m := rl.c.metrics
	m.Request(rl.registry, rl.route, rl.result, rl.w.bytes)
	// Bodies that came from upstream and went to the client as they were.
	// A blob miss is counted by its fill instead, once for all its clients.
	if rl.result == metrics.ResultForwarded || rl.result == metrics.ResultMiss && rl.route == v2.RouteNameManifest {
		m.UpstreamBody(rl.registry, rl.route, rl.w.bytes)
	}
}

// unknownRegistry is the registry of a request whose ns names none of
// the cache's: no origin of ident is ever spelled so (a NUL).
const unknownRegistry = "\x00unknown"

// registryLabel names a registry in the log, as in metrics: the registry's
// ns, the default registry's origin host, or "unknown".
func (c *API) registryLabel(registry string) string {
	switch {
	case registry == unknownRegistry:
		return metrics.UnknownRegistry
	case registry != "":
		return registry
	}
	return c.cfg.Upstreams.Origin.Host
}

// statusWriter records the status and body size of a response for the log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(p)
	s.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the ReadFrom of the writer below (net/http's, which hands
// an *os.File to sendfile on a plain TCP connection), counting the bytes
// and the implicit 200 as Write does. Below a writer without one it copies
// through Write.
func (s *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := s.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{s.ResponseWriter}, src)
	}
	s.bytes += n
	return n, err
}

// readsFrom reports whether the writer below has a ReadFrom of its own,
// which a sendfile could reach.
func (s *statusWriter) readsFrom() bool {
	_, ok := s.ResponseWriter.(io.ReaderFrom)
	return ok
}

// FlushError sends what the writers below buffer: Fill.Stream calls it
// whenever it waits for upstream bytes.
func (s *statusWriter) FlushError() error {
	return http.NewResponseController(s.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the real writer (flushes).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
