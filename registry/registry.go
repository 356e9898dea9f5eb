// Package registry is the content-cache build of distribution's registry:
// distribution's storage drivers, access controllers and commands, plus the
// downstream middleware (a content cache) and the contentcaches middleware
// (an origin redirecting to transparent caches). Every distribution
// configuration option keeps working; without either block the binary is
// a plain registry.
package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	distregistry "github.com/distribution/distribution/v3/registry"
	"github.com/docker/go-metrics"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	// The downstream middleware registers itself at import.
	"github.com/content-cache/content-cache/downstream"
	// So does the origin side of transparent caches (contentcaches).
	"github.com/content-cache/content-cache/downstream/origin"
	"github.com/content-cache/content-cache/internal/warmauth"

	// What distribution's own registry binary includes.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/silly"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/proxy"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/azure"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/gcs"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/cloudfront"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/redirect"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/rewrite"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// Version is set at link time (-ldflags "-X .../registry.Version=v1.2.3").
var Version = "dev"

// Main runs the content-cache command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	code := 0
	root := &cobra.Command{
		Use:           "content-cache",
		Short:         "content-cache: a read-only, origin-authorized cache of a container registry",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	showVersion := root.Flags().BoolP("version", "v", false, "show the version and exit")
	root.RunE = func(cmd *cobra.Command, _ []string) error {
		if *showVersion {
			fmt.Fprintln(stdout, VersionString())
			return nil
		}
		return cmd.Usage()
	}
	serve := &cobra.Command{
		Use:   "serve <config>",
		Short: "serve the registry (a content cache when the downstream middleware is configured)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			config, err := LoadConfiguration(args)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), config)
		},
	}
	gc := distregistry.GCCmd
	gc.Use = "garbage-collect <config>"
	root.AddCommand(serve, gc, warmCommand(stdout))
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(stderr, "content-cache: "+oneLine(err.Error()))
		code = 1
	}
	return code
}

// LoadConfiguration reads the configuration the way distribution does (the
// path argument or REGISTRY_CONFIGURATION_PATH, REGISTRY_* overrides
// applied) and checks the downstream options, so that a bad configuration
// stops startup with one line.
func LoadConfiguration(args []string) (*configuration.Configuration, error) {
	path := os.Getenv("REGISTRY_CONFIGURATION_PATH")
	if len(args) > 0 {
		path = args[0]
	}
	if path == "" {
		return nil, fmt.Errorf("configuration error: no configuration file given; expected content-cache serve CONFIG")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("configuration error: %v", err)
	}
	defer f.Close()
	config, err := configuration.Parse(f)
	if err != nil {
		if strings.Contains(err.Error(), "unsupported version") {
			return nil, fmt.Errorf("configuration error in %s: %v; expected version: 0.1", path, err)
		}
		return nil, fmt.Errorf("configuration error in %s: %v", path, err)
	}
	if err := checkTLS(config); err != nil {
		return nil, fmt.Errorf("configuration error in %s: %v", path, err)
	}
	if err := downstream.CheckConfiguration(config); err != nil {
		return nil, fmt.Errorf("configuration error in %s: %v", path, err)
	}
	if err := origin.CheckConfiguration(config); err != nil {
		return nil, fmt.Errorf("configuration error in %s: %v", path, err)
	}
	return config, nil
}

// serve runs the registry as distribution's serve command does, but
// reports every startup failure as an error, not a panic or a fatal log,
// and drains on SIGTERM or SIGINT (see drain).
func serve(ctx context.Context, config *configuration.Configuration) error {
	// The drain is ours, whatever http.draintimeout says: distribution's
	// own (a signal handler inside ListenAndServe) is turned off.
	drainTimeout := config.HTTP.DrainTimeout
	if drainTimeout <= 0 {
		drainTimeout = DefaultDrainTimeout
	}
	config.HTTP.DrainTimeout = 0
	defer batchLogs(logrus.StandardLogger())()
	// From here on, a signal drains instead of killing the process.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)

	if mw := downstreamOptions(config); mw != nil {
		// The warm option's registry client (the middleware has none of
		// its own: see internal/warmauth).
		downstream.SetOptions(mw, downstream.Options{WarmClient: warmauth.New})
	}
	var reg *distregistry.Registry
	tracing := tracingConfigured() // before tracingOff sets its own "none"
	afterNewRegistry := tracingOff()
	err := runGuarded(func() {
		var err error
		reg, err = distregistry.NewRegistry(ctx, config)
		if err != nil {
			panic(err)
		}
	})
	if err != nil {
		return err
	}
	afterNewRegistry()
	header, idle, err := downstream.ClientTimeouts(config)
	if err != nil {
		return err
	}
	srv, err := httpServer(reg)
	if err != nil {
		return err
	}
	setClientTimeouts(srv, header, idle)
	gate := &drainGate{next: srv.Handler}
	srv.Handler = gate
	c, cached := downstream.Instance(config)
	if cached {
		defer c.Close()
		if !tracing {
			// Without a trace exporter distribution's OpenTelemetry
			// handler records nothing, yet cost a tenth of a small hit's
			// CPU: hits are answered before it.
			gate.hit = c.ServeHit
		}
		// Next to distribution's own checks (NewRegistry registered them):
		// /debug/health on the debug server reports an error, and / answers
		// 503, while no upstream is reachable.
		c.RegisterHealthChecks(ctx, nil, 0)
	}
	debugErr := make(chan error, 1)
	if config.HTTP.Debug.Addr != "" {
		debug := debugServer(config, header)
		go func() { debugErr <- debug.ListenAndServe() }()
		// Stopped with the registry, not left serving.
		defer debug.Close()
	}
	served := make(chan error, 1)
	go func() { served <- reg.ListenAndServe() }()
	select {
	case err = <-served:
	case err = <-debugErr:
		err = fmt.Errorf("debug server on %s: %w", config.HTTP.Debug.Addr, err)
	case sig := <-signals:
		return drain(reg, gate, c, served, signals, sig, drainTimeout)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	return nil
}

// drain stops the process gracefully, within timeout from the signal:
//  1. The readiness path (/) answers 503, so that load balancers take the
//     replica out, and the cache starts draining (its hooks run).
//  2. New requests are still served until none came for drainQuiet (at
//     most drainQuietMax): those a load balancer sent before it noticed.
//  3. The listener closes; responses in flight finish.
//  4. Fills in flight finish, then the process exits.
//
// A second signal skips what is left: the process exits at once.
// c is nil without the downstream middleware.
func drain(reg *distregistry.Registry, gate *drainGate, c *downstream.Cache, served <-chan error, signals <-chan os.Signal, sig os.Signal, timeout time.Duration) error {
	log := logrus.WithField("component", "registry")
	log.Infof("%v: draining for at most %v (http.draintimeout); a second signal stops at once", sig, timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// A second signal ends the drain at once.
	stop := make(chan struct{})
	go func() {
		select {
		case <-signals:
			log.Warn("second signal: stopping without draining")
			close(stop)
			cancel()
		case <-ctx.Done():
		}
	}()
	gate.start()
	if c != nil {
		c.StartDrain()
	}
	gate.quiet(stop)
	err := reg.Shutdown(ctx)
	if c != nil {
		if cerr := c.Shutdown(ctx); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	switch {
	case errors.Is(err, context.Canceled):
		return errors.New("drain: stopped by a second signal; requests still in flight were cut")
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("drain: requests still in flight after %v were cut (http.draintimeout)", timeout)
	}
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	log.Info("drained")
	return nil
}

// debugServer is distribution's debug server on http.debug.addr: expvar
// (/debug/vars), /debug/health and, when enabled, the Prometheus metrics of
// the default registry: distribution's registry_* and the cache's
// content_cache_*.
func debugServer(config *configuration.Configuration, headerTimeout time.Duration) *http.Server {
	// Its own mux in front of the default one (where expvar and
	// distribution's health package register): the metrics route is not
	// added to process-wide state.
	mux := http.NewServeMux()
	if config.HTTP.Debug.Prometheus.Enabled {
		path := config.HTTP.Debug.Prometheus.Path
		if path == "" {
			path = "/metrics"
		}
		mux.Handle(path, metrics.Handler())
	}
	mux.Handle("/", http.DefaultServeMux)
	return &http.Server{Addr: config.HTTP.Debug.Addr, Handler: mux, ReadHeaderTimeout: headerTimeout}
}

// runGuarded turns the panics distribution raises for startup errors (a bad
// middleware option, an unknown storage driver ...) into an error.
func runGuarded(run func()) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("startup failed: %v", p)
		}
	}()
	run()
	return nil
}

// oneLine keeps an error message on one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// checkTLS loads http.tls' certificate and key, so that a missing or bad
// file stops startup with one line before anything listens.
func checkTLS(config *configuration.Configuration) error {
	t := config.HTTP.TLS
	if t.Certificate == "" && t.Key == "" {
		return nil
	}
	if _, err := tls.LoadX509KeyPair(t.Certificate, t.Key); err != nil {
		return fmt.Errorf("http.tls: certificate %q and key %q: %v; expected a readable PEM certificate and its unencrypted key", t.Certificate, t.Key, err)
	}
	return nil
}

// VersionString names this build and the distribution it is built on.
func VersionString() string {
	dist := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == "github.com/distribution/distribution/v3" {
				dist = m.Version
			}
		}
	}
	return fmt.Sprintf("content-cache %s (distribution %s)", Version, dist)
}
