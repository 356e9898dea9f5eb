package downstream

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/expiry"
	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/distribution/distribution/v3"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/reference"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// Cache is one downstream middleware instance: the local storage, the
// upstreams and the state shared by the requests it serves.
type Cache struct {
	cfg      Config
	local    distribution.Namespace
	up       *upstream.Pool
	access   *access.Access
	router   *mux.Router
	log      *logrus.Entry
	now      func() time.Time
	spoolDir string
	metrics  *metrics.Metrics // this instance's Prometheus collectors (metrics.go)

	fills *fill.Fills

	driver storagedriver.StorageDriver // under local
	store  *store.Store                // local, as the cache reads and writes it
	// redirects: distribution's storage.redirect is on, so a hit on a
	// driver that can redirect answers 307 to the storage. Set by Wrap
	// from the configuration; distribution's default (on) otherwise.
	redirects bool

	expiry *expiry.Expiry // nil without blobttl

	// Lifecycle: the cache's own goroutines (sweeper, health polls) run
	// until ctx ends; fills run until a grace period after Close.
	ctx        context.Context
	cancel     context.CancelFunc
	closeGrace time.Duration
	bg         sync.WaitGroup // the cache's own goroutines
}

// Options are the parts of a Cache that are not configuration. The zero
// value is usable.
type Options struct {
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Logger receives one line per request. Default: logrus' standard logger.
	Logger *logrus.Entry
	// SpoolDir holds the temporary files that fills stream through.
	// Default: os.TempDir().
	SpoolDir string
	// Driver is the storage driver under local (required): fills write
	// through it, and expiry keeps its pull records there and deletes
	// expired data through it. The middleware passes the app's.
	Driver storagedriver.StorageDriver
	// CloseGrace is how long Close lets fills in flight finish before it
	// cancels them. Default: DefaultCloseGrace.
	CloseGrace time.Duration
	// ManualSweep turns off the sweeper goroutine that blobttl starts: the
	// program calls Sweep itself. Default: false (the cache sweeps every
	// tenth of blobttl, within [1s, 1h]).
	ManualSweep bool
}

// New builds a cache over a local namespace (the storage the app built) and
// the upstreams of cfg.
func New(cfg Config, local distribution.Namespace, opts Options) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	m := metrics.New(cfg.Upstreams.Hosts())
	up, err := upstream.New(cfg, opts.Now, opts.Logger.WithField("component", "downstream"), m)
	if err != nil {
		return nil, err
	}
	c := &Cache{
		redirects:  true,
		cfg:        cfg,
		local:      local,
		up:         up,
		access:     access.New(up, cfg.AuthTTL, opts.Now, m),
		metrics:    m,
		router:     newRouter(),
		log:        opts.Logger.WithField("component", "downstream"),
		now:        opts.Now,
		spoolDir:   opts.SpoolDir,
		closeGrace: opts.CloseGrace,
	}
	if c.closeGrace <= 0 {
		c.closeGrace = DefaultCloseGrace
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())

	if opts.Driver == nil {
		return nil, errors.New("downstream: Options.Driver is nil; expected the storage driver under the local namespace")
	}
	c.driver = opts.Driver
	c.store = store.New(local, opts.Driver)
	c.expiry = expiry.New(c.store, cfg.BlobTTL, opts.Now, c.log, m)
	c.fills = fill.New(fill.Deps{
		Upstream: up, Store: c.store, Access: c.access, Expiry: c.expiry, Metrics: m,
		Log: c.log, Now: opts.Now, SpoolDir: opts.SpoolDir, Timeout: cfg.FillTimeout,
	})
	if c.expiry != nil && !opts.ManualSweep {
		c.bg.Go(func() { c.expiry.Run(c.ctx) })
	}
	return c, nil
}

// DefaultCloseGrace is how long Close lets fills in flight finish before
// it cancels them.
const DefaultCloseGrace = 10 * time.Second

// Close stops the cache's own goroutines (the sweeper, health polls),
// lets fills in flight finish for the close grace period, then cancels
// them and waits for them, and releases idle upstream connections.
func (c *Cache) Close() error {
	c.cancel()
	c.bg.Wait()
	c.fills.Close(c.closeGrace)
	c.up.Close()
	return nil
}

// Sweep removes the content nobody pulled for blobttl (see the README's
// Expiry). The first sweep of an instance first adopts what it finds in
// storage without a record, as if pulled now. Without blobttl it does
// nothing. Sweeps run one at a time; the cache runs them itself unless
// Options.ManualSweep is set.
func (c *Cache) Sweep(ctx context.Context) (SweepStats, error) { return c.expiry.Sweep(ctx) }

// SweepStats are what one sweep did.
type SweepStats = expiry.SweepStats

// Driver is the storage driver the cache writes through: what tests and
// tools see of the storage of an instance (the inmemory driver's content
// lives only there).
func (c *Cache) Driver() storagedriver.StorageDriver { return c.driver }

// Handler returns the cache's HTTP handler: it serves the /v2/ API and hands
// everything else (health, metrics, /) to next.
func (c *Cache) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var match mux.RouteMatch
		// match.Handler is set only for the redirects of distribution's
		// router (StrictSlash: a trailing slash too many or missing): the
		// app answers them as the origin does, without any upstream.
		if !c.router.Match(r, &match) || match.Route == nil || match.Handler != nil {
			next.ServeHTTP(w, r)
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
		if ns := wrongNamespace(r, c.cfg.Upstreams.Origin); ns != "" {
			writeError(w, errNamespace(ns, c.cfg.Upstreams.Origin))
			return
		}
		switch route {
		case v2.RouteNameBase, v2.RouteNameCatalog, v2.RouteNameTags, metrics.KindReferrers:
			// Answered by the origin, with the client's credentials: the
			// ping carries the origin's challenge, and the catalog must not
			// reveal what the cache holds.
			c.forward(w, r, rl)
		case v2.RouteNameBlob, v2.RouteNameManifest:
			named, err := reference.WithName(match.Vars["name"])
			if err != nil {
				writeError(w, errNameInvalid(match.Vars["name"], err))
				rl.result = metrics.ResultError
				return
			}
			rl.repo = named.Name()
			if route == v2.RouteNameBlob {
				dgst, err := digest.Parse(match.Vars["digest"])
				if err != nil {
					writeError(w, errDigestInvalid(match.Vars["digest"]))
					rl.result = metrics.ResultError
					return
				}
				rl.digest = dgst
				c.serveBlob(w, r, named, dgst, rl)
				return
			}
			c.serveManifest(w, r, named, match.Vars["reference"], rl)
		default:
			// Upload routes answer GET for upload status: there are none.
			c.refuseWrite(w, r, route)
		}
	})
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

// Gatherer returns this instance's metrics, and only them: what the
// content_cache_* part of the debug server's /metrics shows for it. Tests and
// programs that embed several caches read it; a registry process also finds
// the same metrics in Prometheus' default registry.
func (c *Cache) Gatherer() prometheus.Gatherer { return c.metrics.Gatherer() }

// newRouter is distribution's v2 router plus the referrers route (the OCI
// referrers API, which distribution's router lacks: it is forwarded to the
// origin like a tag list).
func newRouter() *mux.Router {
	r := v2.RouterWithPrefix("")
	r.Path("/v2/{name:" + reference.NameRegexp.String() + "}/referrers/{digest:" + digest.DigestRegexp.String() + "}").Name(metrics.KindReferrers)
	return r
}
