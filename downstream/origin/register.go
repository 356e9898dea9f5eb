package origin

import (
	"context"
	"fmt"
	"net/http"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry"
	"github.com/distribution/distribution/v3/registry/auth"
	registrymiddleware "github.com/distribution/distribution/v3/registry/middleware/registry"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"
)

// Name is the middleware's name in the configuration's middleware.registry
// list: `- name: contentcaches`.
const Name = "contentcaches"

// internalKeyPrefix marks keys the middleware adds to its own options map:
// the map the configuration holds, which is how the HTTP handler (built
// from the configuration) finds the instance the app built, without any
// package-level state.
const internalKeyPrefix = "\x00contentcaches."

const (
	instanceKey = internalKeyPrefix + "instance"
	optionsKey  = internalKeyPrefix + "options"
)

func init() {
	if err := registrymiddleware.Register(Name, initMiddleware); err != nil {
		panic(err)
	}
	registry.RegisterHandler(Wrap)
}

// SetOptions hands Options to the instance the app will build from a
// middleware's options map (config.Middleware["registry"][i].Options).
func SetOptions(middlewareOptions map[string]any, o Options) {
	middlewareOptions[optionsKey] = o
}

// initMiddleware is the registry middleware's InitFunc: it gets the app's
// storage driver, where the caches and settings are kept.
func initMiddleware(ctx context.Context, ns distribution.Namespace, driver storagedriver.StorageDriver, options map[string]any) (distribution.Namespace, error) {
	cfg, err := ParseOptions(options)
	if err != nil {
		return nil, err
	}
	opts, _ := options[optionsKey].(Options)
	o := New(cfg, driver, opts)
	o.ns = ns // signed blob requests are served from it (signed.go)
	if unregister, err := o.metrics.register(prometheus.DefaultRegisterer); err != nil {
		o.log.WithError(err).Warn("metrics not exported by the debug server")
	} else {
		context.AfterFunc(ctx, unregister)
	}
	context.AfterFunc(ctx, func() { _ = o.Close() })
	options[instanceKey] = o
	return namespace{Namespace: ns, o: o}, nil
}

// Wrap is the HTTP handler middleware distribution's registry applies
// around the app (registered at import): it serves /api/v0/ and passes
// everything else to next. Without the middleware configured it returns
// next unchanged.
func Wrap(config *configuration.Configuration, next http.Handler) http.Handler {
	opts := middlewareOptions(config)
	if opts == nil {
		return next
	}
	o, ok := opts[instanceKey].(*Origin)
	if !ok {
		panic(fmt.Errorf("%s: the registry middleware was not initialised; build the app with handlers.NewApp before wrapping it", Name))
	}
	var ac auth.AccessController
	if t := config.Auth.Type(); t != "" {
		var err error
		if ac, err = auth.GetAccessController(t, config.Auth.Parameters()); err != nil {
			panic(fmt.Errorf("%s: auth.%s: %v", Name, t, err))
		}
	}
	a := authConfig{ac: ac, kind: config.Auth.Type()}
	if a.kind == "token" {
		a.realm, _ = config.Auth.Parameters()["realm"].(string)
		a.service, _ = config.Auth.Parameters()["service"].(string)
	}
	// NewApp has set http.secret (a random one when the configuration has
	// none, which then differs between replicas: distribution warns).
	o.setUI(config.HTTP.Secret, a)
	return o.Handler(ac, next)
}

// middlewareOptions returns the options map of the enabled middleware, or
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

// Instance returns the Origin the app built from config, once
// handlers.NewApp ran.
func Instance(config *configuration.Configuration) (*Origin, bool) {
	o, ok := middlewareOptions(config)[instanceKey].(*Origin)
	return o, ok
}

// CheckConfiguration validates the middleware's options within a whole
// registry configuration. Nil when the middleware is not configured.
func CheckConfiguration(config *configuration.Configuration) error {
	opts := middlewareOptions(config)
	if opts == nil {
		return nil
	}
	if _, err := ParseOptions(opts); err != nil {
		return err
	}
	n := 0
	for _, mw := range config.Middleware["registry"] {
		if !mw.Disabled && (mw.Name == Name || mw.Name == "downstream") {
			n++
		}
	}
	if n > 1 {
		return fmt.Errorf("%s: middleware.registry lists %s more than once or together with downstream; expected an origin (%s) or a cache (downstream), once", Name, Name, Name)
	}
	return nil
}
