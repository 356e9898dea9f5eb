// Package registry is the content-cache build of distribution's registry:
// distribution's storage drivers, access controllers and commands, plus the
// downstream middleware. Every distribution configuration option keeps
// working; without a downstream block the binary is a plain registry.
package registry

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	distregistry "github.com/distribution/distribution/v3/registry"
	"github.com/spf13/cobra"

	// The downstream middleware registers itself at import.
	"github.com/content-cache/content-cache/downstream"

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
			if _, err := LoadConfiguration(args); err != nil {
				return err
			}
			return runGuarded(func() { distregistry.ServeCmd.Run(cmd, args) })
		},
	}
	gc := distregistry.GCCmd
	gc.Use = "garbage-collect <config>"
	root.AddCommand(serve, gc)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.Execute(); err != nil {
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
		return nil, fmt.Errorf("configuration error in %s: %v", path, err)
	}
	if err := downstream.CheckConfiguration(config); err != nil {
		return nil, fmt.Errorf("configuration error in %s: %v", path, err)
	}
	return config, nil
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
