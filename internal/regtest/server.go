package regtest

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	gorhandlers "github.com/gorilla/handlers"

	"github.com/content-cache/content-cache/downstream"

	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

// Server is a registry served in-process for a test.
type Server struct {
	URL    string // http://127.0.0.1:PORT
	Host   string // 127.0.0.1:PORT
	Root   string // filesystem storage root
	Config *configuration.Configuration
	Counts *Counter
	Cache  *downstream.Cache // nil for an origin
	// AccessLog is distribution's access log of a cache (gorilla's
	// combined log, inside the cache's handler as the registry binary
	// stacks them): what the cache handed to distribution's app.
	AccessLog *Buffer

	srv *httptest.Server
}

// Kill stops serving at once, as a crashed registry would.
func (s *Server) Kill() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Counter counts the requests a server received, by "METHOD /path".
type Counter struct {
	mu       sync.Mutex
	m        map[string]int
	inFlight int
	changed  chan struct{} // closed and replaced when inFlight changes
}

// Get returns how many requests "METHOD /path" were received.
func (c *Counter) Get(method, path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[method+" "+path]
}

// Snapshot returns a copy of every count.
func (c *Counter) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

func (c *Counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.m[r.Method+" "+r.URL.Path]++
		c.mu.Unlock()
		c.addInFlight(1)
		defer c.addInFlight(-1)
		h.ServeHTTP(w, r)
	})
}

func (c *Counter) addInFlight(d int) {
	c.mu.Lock()
	c.inFlight += d
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// WaitInFlight blocks until at least n requests are being served.
func (s *Server) WaitInFlight(ctx context.Context, n int) error {
	for {
		s.Counts.mu.Lock()
		got, ch := s.Counts.inFlight, s.Counts.changed
		s.Counts.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitFillsDone blocks until the cache serves no request and has no fill
// in flight: a fill commits to storage after its clients' last byte, so a
// test that wants the next request to be a hit waits for this.
func (s *Server) WaitFillsDone(ctx context.Context) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := s.WaitIdle(ctx); err != nil {
			return err
		}
		mfs, err := s.Cache.Gatherer().Gather()
		if err != nil {
			return err
		}
		busy := false
		for _, mf := range mfs {
			if mf.GetName() == "content_cache_fills_in_flight" {
				for _, m := range mf.GetMetric() {
					busy = busy || m.GetGauge().GetValue() != 0
				}
			}
		}
		if !busy {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitUpstreamBytes blocks until the cache received at least n bytes of
// bodies of kind ("blob", "manifest") from its upstreams: how far its fills
// are, without depending on any client keeping up.
func (s *Server) WaitUpstreamBytes(ctx context.Context, kind string, n float64) error {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		mfs, err := s.Cache.Gatherer().Gather()
		if err != nil {
			return err
		}
		for _, mf := range mfs {
			if mf.GetName() != "content_cache_upstream_bytes_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "kind" && l.GetValue() == kind && m.GetCounter().GetValue() >= n {
						return nil
					}
				}
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// baseConfig is a registry with filesystem storage under a fresh temp dir.
func baseConfig(t testing.TB) (*configuration.Configuration, string) {
	root := t.TempDir()
	cfg := &configuration.Configuration{
		Storage: configuration.Storage{
			"filesystem": configuration.Parameters{"rootdirectory": root},
			"delete":     configuration.Parameters{"enabled": true},
			// The upload purger is a background goroutine tests do not need.
			"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		},
	}
	cfg.HTTP.Secret = "regtest-secret"
	cfg.Log.AccessLog.Disabled = true
	return cfg, root
}

// StartOrigin serves a plain distribution registry with auth (nil: none).
func StartOrigin(t testing.TB, auth configuration.Auth) *Server {
	return StartOriginTLS(t, auth, nil)
}

// StartOriginTLS is StartOrigin over HTTPS with a certificate from ca (nil:
// plain HTTP).
func StartOriginTLS(t testing.TB, auth configuration.Auth, ca *CA) *Server {
	t.Helper()
	cfg, root := baseConfig(t)
	cfg.Auth = auth
	app := handlers.NewApp(t.Context(), cfg)
	s := serve(t, cfg, root, app, ca)
	t.Cleanup(func() { _ = app.Shutdown() })
	return s
}

// StartRegistryOn serves a plain distribution registry (no auth, no
// cache) over the storage st: what distribution itself answers from
// content a cache stored there.
func StartRegistryOn(t testing.TB, st Storage) *Server {
	t.Helper()
	cfg, _ := baseConfig(t)
	cfg.Storage = st.Config()
	app := handlers.NewApp(t.Context(), cfg)
	s := serve(t, cfg, "", app, nil)
	t.Cleanup(func() { _ = app.Shutdown() })
	return s
}

// StartCache serves a content cache of upstream (a base URL) with extra
// downstream options.
func StartCache(t testing.TB, upstream string, extra map[string]any) *Server {
	return StartCacheTLS(t, upstream, extra, nil)
}

// StartCacheTLS is StartCache over HTTPS with a certificate from ca (nil:
// plain HTTP).
func StartCacheTLS(t testing.TB, upstream string, extra map[string]any, ca *CA) *Server {
	t.Helper()
	return startCache(t, "", upstream, extra, ca)
}

// StartCacheAt is StartCache over the storage under root, which other
// caches (at once, or after a restart) may share.
func StartCacheAt(t testing.TB, root, upstream string, extra map[string]any) *Server {
	t.Helper()
	return startCache(t, root, upstream, extra, nil)
}

func startCache(t testing.TB, root, upstream string, extra map[string]any, ca *CA) *Server {
	cfg, tmp := baseConfig(t)
	if root == "" {
		root = tmp
	}
	cfg.Storage["filesystem"]["rootdirectory"] = root
	return startCacheConfig(t, cfg, root, upstream, extra, ca)
}

// StartCacheOn is StartCache over the storage st, which other caches (at
// once, or after a restart) may share when st.Shared.
func StartCacheOn(t testing.TB, st Storage, upstream string, extra map[string]any) *Server {
	t.Helper()
	cfg, _ := baseConfig(t)
	cfg.Storage = st.Config()
	return startCacheConfig(t, cfg, "", upstream, extra, nil)
}

func startCacheConfig(t testing.TB, cfg *configuration.Configuration, root, upstream string, extra map[string]any, ca *CA) *Server {
	opts := map[string]any{"upstreams": []any{upstream}}
	maps.Copy(opts, extra)
	cfg.Middleware = map[string][]configuration.Middleware{
		"registry": {{Name: downstream.Name, Options: opts}},
	}
	app := handlers.NewApp(t.Context(), cfg)
	accessLog := &Buffer{}
	h := downstream.Wrap(cfg, gorhandlers.CombinedLoggingHandler(accessLog, app))
	s := serve(t, cfg, root, h, ca)
	s.Cache, _ = downstream.Instance(cfg)
	s.AccessLog = accessLog
	t.Cleanup(func() {
		_ = s.Cache.Close()
		_ = app.Shutdown()
	})
	return s
}

func serve(t testing.TB, cfg *configuration.Configuration, root string, h http.Handler, ca *CA) *Server {
	counts := &Counter{m: map[string]int{}, changed: make(chan struct{})}
	srv := httptest.NewUnstartedServer(counts.wrap(h))
	if ca != nil {
		srv.TLS = ca.ServerTLS(t)
		// As distribution serves TLS: HTTP/2 for clients that offer it.
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return &Server{URL: srv.URL, Host: u.Host, Root: root, Config: cfg, Counts: counts, srv: srv}
}
