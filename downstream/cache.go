package downstream

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/access"
	"github.com/content-cache/content-cache/downstream/internal/cluster"
	"github.com/content-cache/content-cache/downstream/internal/expiry"
	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/httpapi"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/content-cache/content-cache/downstream/internal/warm"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/sirupsen/logrus"
)

// Cache is one downstream middleware instance. It wires the concerns, each
// in a package of its own under internal/: the upstream pool, access (the
// authorization flow), the store, fills, expiry and the HTTP API.
type Cache struct {
	cfg     Config
	up      *upstream.Set
	access  *access.Access
	store   *store.Store
	fills   *fill.Fills
	expiry  *expiry.Expiry // nil without blobttl
	redis   *cluster.Redis // nil on a single node (no redis option)
	replica string         // this replica's name in Redis
	api     *httpapi.API
	metrics *metrics.Metrics // this instance's Prometheus collectors
	log     *logrus.Entry
	warmer  *warm.Scheduler // nil without the warm option (warm.go)
	// warmClient makes warm runs' registry clients (Options.WarmClient).
	warmClient WarmClient
	// warmAuto: the schedule's timer runs, from the first Handler on
	// (the handler's settings are final then).
	warmAuto  bool
	warmStart sync.Once

	// Lifecycle: the cache's own goroutines (sweeper, health polls) run
	// until ctx ends; fills run until a grace period after Close.
	ctx        context.Context
	cancel     context.CancelFunc
	closeGrace time.Duration
	bg         sync.WaitGroup // the cache's own goroutines
	drain      *drain         // a graceful stop (drain.go)
}

// Options are the parts of a Cache that are not configuration. The zero
// value is usable.
type Options struct {
	// Now is the clock. Default: time.Now.
	Now func() time.Time
	// Logger receives one line per request. Default: logrus' standard logger.
	Logger *logrus.Entry
	// SpoolDir is ignored: fills stream through a bounded window in
	// memory and the storage upload, not through temporary files.
	//
	// Deprecated: kept so that existing callers compile.
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
	// ManualWarm turns off the warm schedule's timer: the program calls
	// WarmNow itself. Default: false (the cache warms at startup and every
	// warm.interval).
	ManualWarm bool
	// WarmClient makes the registry client of warm runs (the command and
	// the warm option). Nil: the cache cannot warm (Warm fails, and so do
	// the scheduled runs). The content-cache binary sets it.
	WarmClient WarmClient
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
	if opts.Driver == nil {
		return nil, errors.New("downstream: Options.Driver is nil; expected the storage driver under the local namespace")
	}
	log := opts.Logger.WithField("component", "downstream")
	labels := map[string]string{}
	var hosts []*url.URL
	for _, r := range cfg.All() {
		labels[r.Name] = r.Label()
		hosts = append(hosts, r.Upstreams.Hosts()...)
	}
	m := metrics.New(hosts, metrics.WithRegistries(labels))
	up, err := upstream.NewSet(cfg, opts.Now, log, m)
	if err != nil {
		return nil, err
	}
	if cfg.Anonymous != nil {
		// The spec: upstream credentials are not sent for a client
		// unless explicitly configured. This is; say what it means.
		log.WithField("username", cfg.Anonymous.Username).Warn("option \"anonymous\" is set on the default registry: every request without credentials, from anyone who can reach this cache, pulls with this account")
	}
	c := &Cache{cfg: cfg, up: up, metrics: m, log: log, closeGrace: opts.CloseGrace, drain: newDrain(), warmClient: opts.WarmClient}
	if c.closeGrace <= 0 {
		c.closeGrace = DefaultCloseGrace
	}
	c.access = access.New(up, cfg.AuthTTL, cfg.OfflineGrace, opts.Now, m)
	c.store = store.New(local, opts.Driver)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	var shared expiry.Cluster
	if cfg.Redis != nil {
		c.replica = uuid.NewString()
		c.redis = cluster.NewRedis(cfg.Redis, cluster.RedisOptions{
			Log: log, OnError: m.RedisError, OnState: func(up bool) { m.SetClusterFallback(!up) },
		})
		shared = expiry.Cluster{
			InUse:  c.redis.InUse(c.ctx, c.replica, cfg.Redis.LeaseTTL),
			Leases: c.redis.Leases(), Owner: c.replica,
			Pulls: c.redis.Pulls(), Flush: cfg.Redis.PullsFlush,
			Sizes: c.redis.Sizes(), RemovalTTL: cfg.Redis.LeaseTTL,
		}
	}
	bound := expiry.SizeBound{MaxSize: cfg.MaxSize, LowWatermark: cfg.LowWatermark}
	if len(cfg.Pin) > 0 {
		bound.Pinned = cfg.Pinned
	}
	c.expiry = expiry.NewBounded(c.store, cfg.BlobTTL, bound, opts.Now, log, m, shared)
	c.fills = fill.New(fill.Deps{
		Upstream: up, Store: c.store, Access: c.access, Expiry: c.expiry, Metrics: m,
		Log: log, Now: opts.Now, Timeout: cfg.FillTimeout,
	})
	keys, err := newKeyring(cfg, log)
	if err != nil {
		return nil, err
	}
	c.api = httpapi.New(httpapi.Deps{
		Config: cfg, Upstream: up, Access: c.access, Store: c.store, Fills: c.fills, Expiry: c.expiry,
		Metrics: m, Log: log, Now: opts.Now, Redirects: true, Keys: keys,
	})
	if keys != nil {
		c.bg.Go(func() { keys.Run(c.ctx) })
	}
	if c.expiry != nil && !opts.ManualSweep {
		c.bg.Go(func() { c.expiry.Run(c.ctx) })
	}
	if cfg.Warm != nil {
		c.warmer = c.newWarmSchedule(opts.Now)
		c.warmAuto = !opts.ManualWarm
	}
	return c, nil
}

// DefaultCloseGrace is how long Close lets fills in flight finish before
// it cancels them.
const DefaultCloseGrace = 10 * time.Second

// Close stops the cache's own goroutines (the sweeper, health polls),
// lets fills in flight finish for the close grace period, then cancels
// them and waits for them, and releases idle upstream connections.
func (c *Cache) Close() error { return c.close(c.closeGrace) }

func (c *Cache) close(grace time.Duration) error {
	c.cancel()
	c.bg.Wait()
	c.fills.Close(grace)
	c.api.WaitPrefetch()
	c.up.Close()
	if c.redis != nil {
		return c.redis.Close()
	}
	return nil
}

// Sweep removes the content nobody pulled for blobttl (see the README's
// Expiry). The first sweep of an instance first adopts what it finds in
// storage without a record, as if pulled now. Without blobttl it does
// nothing. Sweeps run one at a time; the cache runs them itself unless
// Options.ManualSweep is set.
func (c *Cache) Sweep(ctx context.Context) (SweepStats, error) { return c.expiry.Sweep(ctx) }

// EnforceSize applies the size bound now (see docs/policies.md): if stored
// data passed maxsize, content goes by least recent pull down to the low
// watermark. Without maxsize it does nothing. The cache runs it itself
// whenever a store passes maxsize, unless Options.ManualSweep is set.
func (c *Cache) EnforceSize(ctx context.Context) (SizeStats, error) { return c.expiry.EnforceSize(ctx) }

// ReconcileSize rebuilds the size bound's index from storage, as the
// cache does at startup and every hour.
func (c *Cache) ReconcileSize(ctx context.Context) error { return c.expiry.Reconcile(ctx) }

// SizeStats are what one pass of the size bound did.
type SizeStats = expiry.SizeStats

// SweepStats are what one sweep did.
type SweepStats = expiry.SweepStats

// Driver is the storage driver the cache writes through: what tests and
// tools see of the storage of an instance (the inmemory driver's content
// lives only there).
func (c *Cache) Driver() storagedriver.StorageDriver { return c.store.Driver() }

// Handler returns the cache's HTTP handler: it serves the /v2/ API and hands
// everything else (health, metrics, /) to next.
func (c *Cache) Handler(next http.Handler) http.Handler {
	if c.warmAuto {
		c.warmStart.Do(func() { c.bg.Go(func() { c.warmer.Run(c.ctx, nil) }) })
	}
	h := c.api.Handler(next)
	if c.redis == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, fill.PeerPath) {
			c.fills.ServePeer(w, r) // the other replicas' requests, authenticated there
			return
		}
		h.ServeHTTP(w, r)
	})
}

// JoinCluster turns cluster-wide fills on, with this replica reachable at
// self and the internal endpoint keyed by secret (distribution's
// http.secret). Before serving; nothing without the redis option.
func (c *Cache) JoinCluster(self, secret string) {
	if c.redis == nil {
		return
	}
	c.fills.SetPeers(&fill.Peers{
		Leases: c.redis.Leases(), Self: self, TTL: c.cfg.Redis.LeaseTTL, Key: fill.PeerKey(secret),
		Draining: c.Draining(),
	})
	c.log.WithFields(map[string]any{"advertise": self, "redis": c.cfg.Redis.Addr}).Info("replica: fills and expiry coordinate through redis")
}

// ServeHit answers a GET or HEAD of a small blob this cache holds, for a
// credential a recent decision allows on its repository, and reports
// whether it did (false: nothing was written; Handler serves it). Handler
// tries it first; a server may call it before the wrappers that surround
// Handler (the registry's OpenTelemetry handler, when no trace exporter is
// configured and so nothing would be recorded).
func (c *Cache) ServeHit(w http.ResponseWriter, r *http.Request) bool { return c.api.ServeHit(w, r) }

// Gatherer returns this instance's metrics, and only them: what the
// content_cache_* part of the debug server's /metrics shows for it. Tests and
// programs that embed several caches read it; a registry process also finds
// the same metrics in Prometheus' default registry.
func (c *Cache) Gatherer() prometheus.Gatherer { return c.metrics.Gatherer() }
