package downstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/cluster"
	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/downstream/internal/fill"
	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/content-cache/content-cache/downstream/internal/warm"
)

// Warming (docs/warming.md): the `content-cache warm` command and the warm
// schedule pull images through this cache's own handler, so that the
// origin authorizes them and every blob is verified before it is kept.

// WarmProgress hears what a warm run does, image by image.
type WarmProgress = warm.Progress

// WarmImageProgress hears one image of a warm run.
type WarmImageProgress = warm.ImageProgress

// WarmResult is what warming one image did.
type WarmResult = warm.Result

// WarmDoer sends a warm run's requests and answers the registries'
// authentication challenges with the run's credential.
type WarmDoer = warm.Doer

// WarmClient makes the registry client of a warm run (Options.WarmClient):
// a WarmDoer over base (whose transport reaches the cache) with the
// credentials of the Docker config file credentialsFile ("": the
// environment's, else the default Docker config), getenv reading the
// environment (the schedule passes one that reads nothing). The binary
// passes internal/warmauth.New (oras-go's client): the middleware adds no
// registry client of its own to distribution's dependencies.
type WarmClient func(base *http.Client, credentialsFile string, getenv func(string) string) (WarmDoer, error)

// CheckDockerConfig checks that path is a readable Docker config file.
func CheckDockerConfig(path string) error { return config.CheckDockerConfig(path) }

// WarmOptions are a warm run's.
type WarmOptions struct {
	// CredentialsFile is a Docker config file; "": the environment's
	// CONTENT_CACHE_USERNAME and CONTENT_CACHE_PASSWORD if set, else
	// DOCKER_CONFIG's config.json or ~/.docker/config.json.
	CredentialsFile string
	// Getenv reads the environment; default os.Getenv.
	Getenv func(string) string
	// Platform is os/arch[/variant]; "": every platform of an index.
	Platform string
	// Progress hears the run; nil: nothing.
	Progress WarmProgress
	// UserAgent names the client in the request log.
	UserAgent string
}

// WarmError is a warm run that could not start: a bad image reference, a
// bad platform, unreadable credentials.
type WarmError struct{ Err error }

func (e WarmError) Error() string { return e.Err.Error() }
func (e WarmError) Unwrap() error { return e.Err }

// Warm pulls images (as users name them) into the cache's storage through
// its own handler, one after the other, and returns one result each. It
// fails as a whole only before it starts (WarmError).
func (c *Cache) Warm(ctx context.Context, images []string, o WarmOptions) ([]WarmResult, error) {
	refs := make([]config.ImageRef, 0, len(images))
	for _, s := range images {
		ref, err := config.ParseImageRef(s)
		if err != nil {
			return nil, WarmError{fmt.Errorf("image %q is not an image reference (%v); expected registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>", s, err)}
		}
		if err := c.cfg.CheckServed(ref); err != nil {
			return nil, WarmError{fmt.Errorf("image %v", err)}
		}
		refs = append(refs, ref)
	}
	var platform *warm.Platform
	if o.Platform != "" {
		p, err := warm.ParsePlatform(o.Platform)
		if err != nil {
			return nil, WarmError{err}
		}
		platform = p
	}
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	return c.warm(ctx, refs, platform, o.CredentialsFile, getenv, o)
}

// warm runs refs through a loopback listener serving the cache's handler.
func (c *Cache) warm(ctx context.Context, refs []config.ImageRef, platform *warm.Platform, credentialsFile string, getenv func(string) string, o WarmOptions) ([]WarmResult, error) {
	if c.warmClient == nil {
		return nil, WarmError{errors.New("this cache was built without a registry client for warming (Options.WarmClient); the content-cache binary sets it")}
	}
	hosts := map[string]warm.Registry{}
	for _, ref := range refs {
		host := ref.Host
		if host == "" {
			host = c.cfg.Upstreams.Origin.Host
		}
		ns, _ := c.cfg.ServedRegistry(host)
		scheme := c.cfg.Upstreams.Origin.Scheme
		if r, ok := c.cfg.Registries[ns]; ok && ns != "" {
			scheme = r.Upstreams.Origin.Scheme
		}
		hosts[host] = warm.Registry{Scheme: scheme, NS: ns}
	}
	lb, err := warm.Serve(c.api.Handler(http.NotFoundHandler()))
	if err != nil {
		return nil, fmt.Errorf("warm: serving the cache on loopback: %w", err)
	}
	client := lb.Client(hosts)
	doer, err := c.warmClient(client, credentialsFile, getenv)
	if err != nil {
		_ = lb.Close(ctx)
		return nil, WarmError{fmt.Errorf("credentials: %v", err)}
	}
	defer func() {
		client.CloseIdleConnections()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = lb.Close(sctx)
	}()
	var budget int64
	if c.cfg.MaxSize > 0 {
		wm := c.cfg.LowWatermark
		if wm <= 0 {
			wm = config.DefaultLowWatermark
		}
		budget = c.cfg.MaxSize * int64(wm) / 100
	}
	w := &warm.Warmer{
		Client:      doer,
		Resolve:     func(h string) (warm.Registry, bool) { r, ok := hosts[h]; return r, ok },
		DefaultHost: c.cfg.Upstreams.Origin.Host,
		Storage:     storedData{c.store, c.fills},
		Platform:    platform,
		Budget:      budget,
		Progress:    o.Progress,
		UserAgent:   o.UserAgent,
	}
	return w.Run(ctx, refs), nil
}

// storedData says whether a digest's data is in storage.
type storedData struct {
	st    *store.Store
	fills *fill.Fills
}

func (s storedData) Settle(ctx context.Context, dgst digest.Digest) error {
	return s.fills.Settle(ctx, dgst)
}

func (s storedData) Stored(ctx context.Context, dgst digest.Digest) (bool, error) {
	_, err := s.st.Stat(ctx, dgst)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, distribution.ErrBlobUnknown) || store.IsNotFound(err):
		return false, nil
	}
	return false, err
}

// WarmNow runs the warm schedule once now (as its timer does), unless
// another replica runs it or ran it in this interval (an error wrapping
// warm.ErrSkipped). Without a warm option it does nothing.
func (c *Cache) WarmNow(ctx context.Context) ([]WarmResult, error) {
	if c.warmer == nil {
		return nil, nil
	}
	return c.warmer.RunOnce(ctx)
}

// ErrWarmSkipped is WarmNow's answer when another replica warms.
var ErrWarmSkipped = warm.ErrSkipped

// newWarmSchedule builds the warm schedule of cfg.Warm. It runs on one
// replica at a time: under the cluster's leases in Redis with the redis
// option, in memory on a single node.
func (c *Cache) newWarmSchedule(now func() time.Time) *warm.Scheduler {
	wcfg := c.cfg.Warm
	var leases warm.Leases = cluster.NewMemoryLeases(now)
	owner := replicaName()
	if c.redis != nil {
		leases, owner = c.redis.Leases(), c.replica
	}
	return &warm.Scheduler{
		Interval: wcfg.Interval,
		Leases:   leases,
		Owner:    owner,
		Log:      c.log.WithField("component", "warm"),
		Metrics:  c.metrics,
		Now:      now,
		Warm: func(ctx context.Context) ([]WarmResult, error) {
			// The credentials file is read at each run: a rotated secret
			// is picked up without a restart. Never the environment's.
			return c.warm(ctx, wcfg.Refs, nil, wcfg.Credentials, func(string) string { return "" }, WarmOptions{UserAgent: "content-cache-warm"})
		},
	}
}

// replicaName names this process in the leases it holds.
func replicaName() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid())
}
