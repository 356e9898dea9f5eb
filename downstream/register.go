package downstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	ccconfig "github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	registrymiddleware "github.com/distribution/distribution/v3/registry/middleware/registry"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"
)

// Name is the middleware's name in the configuration's middleware.registry
// list.
const Name = "downstream"

// internalKeyPrefix marks keys the middleware adds to its own options map.
// The map is the one the configuration holds, which is how the HTTP handler
// (built from the configuration) finds the instance the app's middleware
// initialisation built, without any package-level state.
const internalKeyPrefix = ccconfig.InternalKeyPrefix

const (
	instanceKey = internalKeyPrefix + "instance"
	optionsKey  = internalKeyPrefix + "options"
	configKey   = internalKeyPrefix + "config"
)

// SetOptions hands Options to the instance the app will build from a
// middleware's options map (config.Middleware["registry"][i].Options): a
// program that builds the app itself can set the clock, the logger or
// manual sweeps. The storage driver is always the app's.
func SetOptions(middlewareOptions map[string]any, o Options) {
	middlewareOptions[optionsKey] = o
}

func init() {
	if err := registrymiddleware.Register(Name, initMiddleware); err != nil {
		panic(err)
	}
	registry.RegisterHandler(Wrap)
}

// initMiddleware is the registry middleware's InitFunc.
func initMiddleware(ctx context.Context, ns distribution.Namespace, driver storagedriver.StorageDriver, options map[string]any) (distribution.Namespace, error) {
	cfg, err := parsedOptions(options)
	if err != nil {
		return nil, err
	}
	opts, _ := options[optionsKey].(Options)
	opts.Driver = driver
	c, err := New(cfg, ns, opts)
	if err != nil {
		return nil, err
	}
	// In the default registry, served by the debug server, for as long as
	// the app lives: its context ends when it shuts down (see metrics).
	if unregister, err := c.metrics.RegisterDefault(prometheus.DefaultRegisterer); err != nil {
		c.log.WithError(err).Warn("metrics not exported by the debug server")
	} else {
		context.AfterFunc(ctx, unregister)
	}
	options[instanceKey] = c
	return sealedNamespace{ns}, nil
}

// parsedOptions parses a middleware's options once: startup checks the
// configuration, builds the app and wraps it, and the CA files are read
// only the first time.
func parsedOptions(opts map[string]any) (Config, error) {
	if cfg, ok := opts[configKey].(Config); ok {
		return cfg, nil
	}
	cfg, err := ParseOptions(opts)
	if err == nil {
		opts[configKey] = cfg
	}
	return cfg, err
}

// Wrap is the HTTP handler middleware distribution's registry applies around
// the app (registered at import). Without a downstream middleware in the
// configuration it returns next unchanged.
func Wrap(config *configuration.Configuration, next http.Handler) http.Handler {
	opts := middlewareOptions(config)
	if opts == nil {
		return next
	}
	if err := CheckConfiguration(config); err != nil {
		panic(err)
	}
	c, ok := opts[instanceKey].(*Cache)
	if !ok {
		panic(fmt.Errorf("downstream: the registry middleware was not initialised; build the app with handlers.NewApp before wrapping it"))
	}
	// Before the handler serves anything: read-only from then on.
	c.api.SetRedirects(redirectsEnabled(config))
	c.store.SetFileRoot(fileRoot(config))
	c.JoinCluster(advertised(c.cfg, config), config.HTTP.Secret)
	return c.Handler(next)
}

// advertised is the URL the other replicas reach this one at: the
// advertise option, or the loopback address at http.addr's port (replicas
// on one host).
func advertised(cfg Config, config *configuration.Configuration) string {
	if cfg.Advertise != nil {
		return cfg.Advertise.String()
	}
	scheme := "http"
	if config.HTTP.TLS.Certificate != "" || config.HTTP.TLS.LetsEncrypt.CacheFile != "" {
		scheme = "https"
	}
	port := "5000"
	if _, p, err := net.SplitHostPort(config.HTTP.Addr); err == nil && p != "" {
		port = p
	}
	return scheme + "://" + net.JoinHostPort("127.0.0.1", port)
}

// middlewareOptions returns the options map of the enabled downstream middleware, or
// nil.
func middlewareOptions(config *configuration.Configuration) map[string]any {
	for _, mw := range config.Middleware["registry"] {
		if mw.Name == Name && !mw.Disabled {
			if mw.Options == nil {
				return map[string]any{}
			}
			return mw.Options
		}
	}
	return nil
}

// Configured reports whether config enables the downstream middleware.
func Configured(config *configuration.Configuration) bool { return middlewareOptions(config) != nil }

// CheckConfiguration validates the downstream options of a whole registry
// configuration, including what the middleware itself cannot see: blobttl
// needs storage.delete.enabled. Nil when the middleware is not configured.
func CheckConfiguration(config *configuration.Configuration) error {
	opts := middlewareOptions(config)
	if opts == nil {
		return nil
	}
	cfg, err := parsedOptions(opts)
	if err != nil {
		return err
	}
	if cfg.BlobTTL > 0 && !deleteEnabled(config) {
		return fmt.Errorf("downstream: option \"blobttl\" (%s) needs storage.delete.enabled: true to expire content, but it is not set; expected storage.delete.enabled: true or no blobttl", ccconfig.ShortDuration(cfg.BlobTTL))
	}
	if cfg.Redis != nil && strings.TrimSpace(config.HTTP.Secret) == "" {
		return fmt.Errorf("downstream: option \"redis\" (%s) needs http.secret, but it is not set; expected the same http.secret on every replica (it also keys the replicas' internal endpoint)", cfg.Redis.Addr)
	}
	if cfg.MaxSize > 0 && !deleteEnabled(config) {
		return fmt.Errorf("downstream: option \"maxsize\" (%d bytes) needs storage.delete.enabled: true to evict content, but it is not set; expected storage.delete.enabled: true or no maxsize", cfg.MaxSize)
	}
	if len(config.Middleware["registry"]) > 0 {
		var names []string
		for _, mw := range config.Middleware["registry"] {
			if mw.Name == Name && !mw.Disabled {
				names = append(names, mw.Name)
			}
		}
		if len(names) > 1 {
			return fmt.Errorf("downstream: middleware.registry lists %q %d times; expected once", Name, len(names))
		}
	}
	if t := config.Auth.Type(); t != "" {
		return fmt.Errorf("downstream: auth.%s is set; expected no auth section, because the origin authorizes every request made through the cache", t)
	}
	if config.Proxy.RemoteURL != "" {
		return fmt.Errorf("downstream: proxy.remoteurl (%s) is set; expected either the downstream middleware or distribution's proxy, not both", strings.TrimSpace(config.Proxy.RemoteURL))
	}
	return nil
}

// deleteEnabled reads storage.delete.enabled the way distribution does.
func deleteEnabled(config *configuration.Configuration) bool {
	d, ok := config.Storage["delete"]
	if !ok {
		return false
	}
	enabled, ok := d["enabled"].(bool)
	return ok && enabled
}

// redirectsEnabled reads storage.redirect.disable the way distribution
// does: redirects are on unless disabled.
func redirectsEnabled(config *configuration.Configuration) bool {
	disabled, _ := config.Storage["redirect"]["disable"].(bool)
	return !disabled
}

// Instance returns the Cache that the app built from config, once
// handlers.NewApp ran; a registry that shuts down should Close it.
func Instance(config *configuration.Configuration) (*Cache, bool) {
	c, ok := middlewareOptions(config)[instanceKey].(*Cache)
	return c, ok
}

// ClientTimeouts returns the timeouts for the HTTP server that serves
// config: the downstream options clientheadertimeout and clientidletimeout,
// or their defaults (also without a downstream middleware, so that the
// binary serving a plain registry is protected the same way).
func ClientTimeouts(config *configuration.Configuration) (header, idle time.Duration, err error) {
	opts := middlewareOptions(config)
	if opts == nil {
		return DefaultClientHeaderTimeout, DefaultClientIdleTimeout, nil
	}
	cfg, err := parsedOptions(opts)
	if err != nil {
		return 0, 0, err
	}
	return cfg.ClientHeaderTimeout, cfg.ClientIdleTimeout, nil
}

// fileRoot is the root directory of the filesystem storage driver, whose
// blob files the cache may open itself; "" for any other driver, or when
// storage middleware stands between the registry and the driver.
func fileRoot(config *configuration.Configuration) string {
	if config.Storage.Type() != "filesystem" || len(config.Middleware["storage"]) > 0 {
		return ""
	}
	if root, ok := config.Storage.Parameters()["rootdirectory"].(string); ok && root != "" {
		return root
	}
	return "/var/lib/registry" // the filesystem driver's default
}
