package registry

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/warmauth"
)

// warmCommand is `content-cache warm`: images pulled into a cache's
// storage through its configured upstreams, ahead of users
// (docs/warming.md).
func warmCommand(stdout io.Writer) *cobra.Command {
	var credentials, file, platform string
	cmd := &cobra.Command{
		Use:   "warm [--credentials FILE] [--file LIST] [--platform os/arch[/variant]] CONFIG IMAGE...",
		Short: "pull images into the cache's storage through its upstreams, before users pull them",
		Long: `warm pulls images through the configured upstreams into the storage of the cache CONFIG
describes, whether or not a cache serves that storage now. IMAGE names the registry as users
do (registry.example.com/base/app:1.4); without a host it is the default registry's.
Credentials come from a Docker config file (--credentials, else DOCKER_CONFIG or
~/.docker/config.json), or from CONTENT_CACHE_USERNAME and CONTENT_CACHE_PASSWORD.
Exit code 1 when an image failed.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			images := args[1:]
			if file != "" {
				more, err := readImageList(file)
				if err != nil {
					return err
				}
				images = append(images, more...)
			}
			if len(images) == 0 {
				return errors.New("warm: no IMAGE given; expected at least one image reference, or --file LIST")
			}
			config, err := LoadConfiguration(args[:1])
			if err != nil {
				return err
			}
			return warm(cmd.Context(), config, stdout, images, downstream.WarmOptions{
				CredentialsFile: credentials,
				Platform:        platform,
				UserAgent:       "content-cache-warm/" + Version,
			})
		},
	}
	cmd.Flags().StringVar(&credentials, "credentials", "", "a Docker config file to take credentials from (default: DOCKER_CONFIG/config.json or ~/.docker/config.json)")
	cmd.Flags().StringVar(&file, "file", "", "a file listing images, one per line (# starts a comment)")
	cmd.Flags().StringVar(&platform, "platform", "", "only this platform of an index, os/arch[/variant] (default: every platform)")
	return cmd
}

// readImageList reads one image per line; blank lines and # comments are
// skipped.
func readImageList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("warm: --file: %v", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("warm: --file %s: %v", path, err)
	}
	return out, nil
}

// warm builds the cache of config in this process and warms images
// through it.
func warm(ctx context.Context, config *configuration.Configuration, stdout io.Writer, images []string, o downstream.WarmOptions) error {
	mw := downstreamOptions(config)
	if mw == nil {
		return errors.New("warm: the configuration has no downstream middleware; expected the configuration of a content cache")
	}
	// Quiet: the cache's request log would drown the progress. Warnings
	// (a failing upstream, a pull record not written) still show.
	log := logrus.New()
	log.SetOutput(os.Stderr)
	log.SetLevel(logrus.WarnLevel)
	// No sweep, no scheduled warm run in this process: it only warms.
	downstream.SetOptions(mw, downstream.Options{ManualSweep: true, ManualWarm: true, Logger: logrus.NewEntry(log), WarmClient: warmauth.New})
	config.Log.AccessLog.Disabled = true
	// distribution's startup chatter (no http.secret, which no upload
	// needs here; no repository remover) means nothing to a warm run.
	logrus.SetLevel(logrus.ErrorLevel)
	// Upload purging is the server's business, not a one-shot command's.
	maintenance := config.Storage["maintenance"]
	if maintenance == nil {
		maintenance = configuration.Parameters{}
		config.Storage["maintenance"] = maintenance
	}
	maintenance["uploadpurging"] = map[any]any{"enabled": false}
	afterNewApp := tracingOff()
	var app *handlers.App
	err := runGuarded(func() { app = handlers.NewApp(ctx, config) })
	if err != nil {
		return err
	}
	afterNewApp()
	defer func() { _ = app.Shutdown() }()
	downstream.Wrap(config, app) // the handler's settings as the server has them
	c, ok := downstream.Instance(config)
	if !ok {
		return errors.New("warm: the cache was not built")
	}
	defer c.Close()
	if err := c.ReconcileSize(ctx); err != nil {
		return fmt.Errorf("warm: reading the stored size for maxsize: %w", err)
	}
	var rep reporter = &plainReporter{out: stdout}
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		rep = newBarReporter(ctx, stdout)
	}
	o.Progress = rep
	results, err := c.Warm(ctx, images, o)
	rep.Wait()
	if err != nil {
		return fmt.Errorf("warm: %w", err)
	}
	// What this run stored may take the storage past maxsize: the bound
	// holds once it ends (least recent pulls go first; what it warmed was
	// just pulled).
	if _, err := c.EnforceSize(ctx); err != nil {
		return fmt.Errorf("warm: applying maxsize: %w", err)
	}
	return summarize(stdout, results)
}

// downstreamOptions is the downstream middleware's options map, or nil.
func downstreamOptions(config *configuration.Configuration) map[string]any {
	for i, mw := range config.Middleware["registry"] {
		if mw.Name == downstream.Name && !mw.Disabled {
			if mw.Options == nil {
				config.Middleware["registry"][i].Options = map[string]any{}
			}
			return config.Middleware["registry"][i].Options
		}
	}
	return nil
}

// summarize prints the summary line and returns the error naming the
// failed images, if any.
func summarize(w io.Writer, results []downstream.WarmResult) error {
	var failed []string
	var fetched, present int
	var bytes int64
	for _, r := range results {
		if r.Err != nil {
			failed = append(failed, r.Ref)
			continue
		}
		fetched += r.Fetched
		present += r.Present
		bytes += r.Bytes
	}
	line := fmt.Sprintf("warm: %d of %d images warmed; %s fetched in %d blobs, %d blobs already stored",
		len(results)-len(failed), len(results), humanBytes(bytes), fetched, present)
	if len(failed) > 0 {
		line += fmt.Sprintf("; %d failed: %s", len(failed), strings.Join(failed, ", "))
	}
	fmt.Fprintln(w, line)
	if len(failed) > 0 {
		return fmt.Errorf("warm: %d of %d images failed: %s", len(failed), len(results), strings.Join(failed, ", "))
	}
	return nil
}

// humanBytes prints n in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// resultLine is the plain line of one image.
func resultLine(r downstream.WarmResult) string {
	if r.Err != nil {
		return fmt.Sprintf("failed %s: %s", r.Ref, oneLine(r.Err.Error()))
	}
	return fmt.Sprintf("warmed %s %s: %d blobs, %d fetched (%s), %d already stored; %d manifests; %s",
		r.Ref, r.Digest, r.Blobs, r.Fetched, humanBytes(r.Bytes), r.Present, r.Manifests, r.Elapsed.Round(1e6))
}
