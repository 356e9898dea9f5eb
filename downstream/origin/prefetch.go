package origin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/distribution/distribution/v3/manifest/schema2"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// Prefetch for transparent caches (option prefetch): a transparent cache
// never sees the manifests its users pull, so it cannot start their
// layers' fills ahead of the requests as a cache in the path does. When
// this origin serves an image manifest (GET) to a user assigned to a
// healthy cache, it POSTs the signed URLs of the manifest's config and
// layers, the URLs a redirect would give that user, to the cache's prefetch
// endpoint (httpapi.PrefetchPath), which starts the fills. Fire and forget:
// the POST runs after the manifest is served, in a goroutine of its own,
// and its failure touches nothing.

// prefetchPath is the cache's endpoint (httpapi.PrefetchPath; the origin
// package does not import the cache's).
const prefetchPath = "/_content-cache/prefetch"

// maxPrefetchBlobs bounds the URLs of one POST (the cache bounds what it
// starts anyway).
const maxPrefetchBlobs = 256

// parsePrefetch reads `prefetch: true|false`.
func parsePrefetch(c *Config, _ *rawKeys, v any) error {
	on, ok := v.(bool)
	if !ok {
		return fmt.Errorf("%s: option \"prefetch\": found %s, expected true or false", Name, yamlopt.Describe(v))
	}
	c.Prefetch = on
	return nil
}

// Manifests wraps the repository's manifests so that a GET of an image
// manifest sends the prefetch.
func (r repository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil || !r.o.cfg.Prefetch {
		return ms, err
	}
	return manifests{ManifestService: ms, o: r.o, repo: r.Named().Name()}, nil
}

type manifests struct {
	distribution.ManifestService
	o    *Origin
	repo string
}

// Get is reached only after the app's access controller allowed the pull,
// so the URLs signed here are what this user's blob requests would be
// redirected to.
func (m manifests) Get(ctx context.Context, dgst digest.Digest, options ...distribution.ManifestServiceOption) (distribution.Manifest, error) {
	man, err := m.ManifestService.Get(ctx, dgst, options...)
	if err == nil {
		m.o.prefetch(ctx, m.repo, man)
	}
	return man, err
}

// prefetch sends the signed URLs of man's blobs to the cache of the
// request's user, if man is an image manifest and the request a GET that
// would be redirected.
func (o *Origin) prefetch(ctx context.Context, repo string, man distribution.Manifest) {
	r, ok := ctx.Value("http.request").(*http.Request)
	if !ok || r.Method != http.MethodGet || viaCache(r) {
		return
	}
	switch man.(type) {
	case *ocischema.DeserializedManifest, *schema2.DeserializedManifest:
	default:
		return // an index: the platform's manifest follows
	}
	user, _ := ctx.Value(userNameKey).(string)
	name, err := o.assignment(ctx, user, r)
	if err != nil || name == "" {
		return
	}
	cache, ok := o.knownCache(name)
	if !ok || !o.isHealthy(name) {
		return
	}
	var req struct {
		Blobs []string `json:"blobs"`
	}
	exp := o.now().Add(o.cfg.SignatureTTL)
	for _, d := range man.References() {
		if len(d.URLs) > 0 || len(req.Blobs) == maxPrefetchBlobs {
			continue
		}
		q := o.cfg.Signer.Sign(signature.Claims{Method: http.MethodGet, Repository: repo, Digest: d.Digest.String(), Expiry: exp, Cache: cache.Name})
		req.Blobs = append(req.Blobs, "/v2/"+repo+"/blobs/"+d.Digest.String()+"?"+q.Encode())
	}
	if len(req.Blobs) == 0 {
		return
	}
	body, err := json.Marshal(req)
	if err != nil {
		return
	}
	go o.sendPrefetch(cache, body)
}

// sendPrefetch POSTs body to cache's prefetch endpoint, bounded by the
// probe timeout. The body holds signatures: nothing of it is logged.
func (o *Origin) sendPrefetch(cache Cache, body []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cache.Host+prefetchPath, bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := o.client.Do(req)
	if err != nil {
		o.log.WithError(err).WithField("cache", cache.Name).Debug("prefetch POST failed")
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		o.log.WithField("cache", cache.Name).WithField("status", resp.StatusCode).Debug("prefetch POST not accepted")
	}
}
