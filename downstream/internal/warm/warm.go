// Package warm pulls images into the cache before users ask for them: the
// `content-cache warm` command and the `warm` schedule of a running cache
// (docs/warming.md).
//
// A warm run is a client of the cache itself. Its requests go through the
// cache's own HTTP handler (served on a private loopback listener for the
// run), with the credentials of a Docker config file, so that everything
// a user's pull does happens: the origin authorizes each request, every
// blob is verified against its digest before it is kept, concurrent
// fetches of one blob are one, and pulls are recorded for expiry and the
// size bound. A blob already stored is never fetched again: the run asks
// for one byte of it (which links it into the repository and records the
// pull) instead of the whole blob.
package warm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/content-cache/content-cache/downstream/internal/config"
)

// Registry is how the warm client reaches one registry the cache serves.
type Registry struct {
	// Scheme of the registry's origin (https or http): what the client's
	// authentication checks token realms against.
	Scheme string
	// NS is the ns query parameter naming it to the cache; "" for the
	// default registry.
	NS string
}

// Resolver says how a registry host of an image reference is reached;
// false when the cache does not serve it.
type Resolver func(host string) (Registry, bool)

// Storage says whether a digest's data is stored (consumer-owned: the
// cache's store).
type Storage interface {
	Stored(ctx context.Context, dgst digest.Digest) (bool, error)
	// Settle waits until the fills of dgst in flight ended: the client
	// has a blob's last byte before the cache commits it, and the next
	// image of a run must find it stored, not fetch it again.
	Settle(ctx context.Context, dgst digest.Digest) error
}

// Platform selects the manifests of an index: OS and Architecture, and
// Variant when set.
type Platform struct{ OS, Architecture, Variant string }

// ParsePlatform reads os/arch[/variant].
func ParsePlatform(s string) (*Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return nil, fmt.Errorf("platform %q: expected os/arch[/variant] such as linux/amd64 or linux/arm64/v8", s)
	}
	p := &Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

func (p *Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func (p *Platform) matches(q *v1.Platform) bool {
	if p == nil {
		return true
	}
	return q != nil && q.OS == p.OS && q.Architecture == p.Architecture && (p.Variant == "" || q.Variant == p.Variant)
}

// Progress hears what a run does, image by image.
type Progress interface {
	// Image starts an image; its reporter hears the rest.
	Image(ref string) ImageProgress
}

// ImageProgress hears one image.
type ImageProgress interface {
	// Resolved: its manifests are read; blobs blobs of total bytes follow.
	Resolved(blobs int, total int64)
	// Bytes: n more bytes of its blobs are in storage (fetched now, or
	// found stored).
	Bytes(n int64)
	// BlobDone: one more blob is in storage.
	BlobDone()
	// Done: the image ended.
	Done(r Result)
}

// Result is what warming one image did.
type Result struct {
	Ref       string        // as named
	Digest    digest.Digest // of what the reference resolved to
	Manifests int           // manifests read (an index and its platforms' manifests)
	Blobs     int           // blobs of the selected platforms
	Fetched   int           // blobs the cache did not have: fetched from upstream now
	Present   int           // blobs already stored: not fetched again
	Bytes     int64         // bytes of the blobs fetched now
	Total     int64         // bytes of every blob of the image
	Elapsed   time.Duration
	Err       error
}

// Doer sends a request and answers the registry's authentication
// challenges (Basic, or a token from the challenge's realm) with the run's
// credential; one per run, so that its tokens serve the whole run.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// Warmer warms images through a cache.
type Warmer struct {
	// Client reaches the cache with the run's credentials; its transport
	// sends every request for a registry host to the cache's handler (see
	// Loopback.Client).
	Client Doer
	// Resolve maps a reference's registry host to how the cache reaches it.
	Resolve Resolver
	// DefaultHost names the default registry (the origin's host): a
	// reference without a host is its, and its credentials are looked up
	// under this name.
	DefaultHost string
	// Storage says what is stored already.
	Storage Storage
	// Platform selects the manifests of an index; nil: every one.
	Platform *Platform
	// Budget bounds the bytes one run warms (the size bound's low
	// watermark): past it, an image fails rather than evict what the run
	// warmed before it. 0: none.
	Budget int64
	// Concurrency is how many blobs of an image are asked at once
	// (default 3, as docker pulls).
	Concurrency int
	// UserAgent names the client in the cache's request log.
	UserAgent string
	// Progress hears what happens; nil: nothing.
	Progress Progress
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// ErrBudget is the failure of an image that would take a run past the size
// bound.
var ErrBudget = errors.New("size bound")

// Run warms refs one image after the other and returns one result each.
// The budget spans the run: content shared by several images counts once.
func (w *Warmer) Run(ctx context.Context, refs []config.ImageRef) []Result {
	run := &runState{seen: map[digest.Digest]int64{}}
	out := make([]Result, 0, len(refs))
	for _, ref := range refs {
		out = append(out, w.image(ctx, ref, run))
	}
	return out
}

// runState is what a run accumulates across its images.
type runState struct {
	seen  map[digest.Digest]int64 // every digest the run warmed, with its size
	total int64
}

type noProgress struct{}

func (noProgress) Resolved(int, int64) {}
func (noProgress) Bytes(int64)         {}
func (noProgress) BlobDone()           {}
func (noProgress) Done(Result)         {}

func (w *Warmer) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// image warms one image.
func (w *Warmer) image(ctx context.Context, ref config.ImageRef, run *runState) (res Result) {
	res.Ref = ref.String()
	var ip ImageProgress = noProgress{}
	if w.Progress != nil {
		ip = w.Progress.Image(res.Ref)
	}
	start := w.now()
	defer func() {
		res.Elapsed = w.now().Sub(start)
		ip.Done(res)
	}()
	host := ref.Host
	if host == "" {
		host = w.DefaultHost
	}
	reg, ok := w.Resolve(host)
	if !ok {
		res.Err = fmt.Errorf("registry %s is not served by this cache", host)
		return res
	}
	c := &client{w: w, base: reg.Scheme + "://" + host + "/v2/" + ref.Repo}

	// Manifests: the reference, then, for an index, its platforms'.
	m, dgst, err := c.manifest(ctx, ref.Reference())
	if err != nil {
		res.Err = err
		return res
	}
	res.Digest, res.Manifests = dgst, 1
	sizes := map[digest.Digest]int64{}
	var order []v1.Descriptor
	addBlobs := func(m *manifest) {
		for _, d := range m.blobs() {
			if _, dup := sizes[d.Digest]; !dup {
				sizes[d.Digest] = d.Size
				order = append(order, d)
			}
		}
	}
	manifestBytes := map[digest.Digest]int64{dgst: m.size}
	if err := c.walk(ctx, m, w.Platform, 0, &res, addBlobs, manifestBytes); err != nil {
		res.Err = err
		return res
	}
	res.Blobs = len(order)
	for _, d := range order {
		res.Total += d.Size
	}

	// The budget: what this image adds to the run.
	var adds int64
	for d, n := range manifestBytes {
		if _, ok := run.seen[d]; !ok {
			adds += n
		}
	}
	for d, n := range sizes {
		if _, ok := run.seen[d]; !ok {
			adds += n
		}
	}
	if w.Budget > 0 && run.total+adds > w.Budget {
		res.Err = fmt.Errorf("%w: warming it would bring this run to %d bytes, past the low watermark of maxsize (%d bytes); it would evict what this run warmed", ErrBudget, run.total+adds, w.Budget)
		return res
	}
	for d, n := range manifestBytes {
		run.seen[d] = n
	}
	for d, n := range sizes {
		run.seen[d] = n
	}
	run.total += adds

	ip.Resolved(len(order), res.Total)
	res.Fetched, res.Present, res.Bytes, res.Err = c.blobs(ctx, order, ip)
	return res
}

// maxIndexDepth bounds nested indexes (an index of indexes is rare; a
// loop of them would never end).
const maxIndexDepth = 2

// walk adds the blobs of m, or of the manifests its index lists for
// platform.
func (c *client) walk(ctx context.Context, m *manifest, platform *Platform, depth int, res *Result, addBlobs func(*manifest), sizes map[digest.Digest]int64) error {
	if !m.isIndex() {
		addBlobs(m)
		return nil
	}
	if depth >= maxIndexDepth {
		return fmt.Errorf("indexes nested deeper than %d", maxIndexDepth)
	}
	matched := 0
	for _, d := range m.Manifests {
		if !platform.matches(d.Platform) && !isIndexType(d.MediaType) {
			continue
		}
		child, dgst, err := c.manifest(ctx, d.Digest.String())
		if err != nil {
			return err
		}
		if dgst != d.Digest {
			return fmt.Errorf("manifest %s: the cache answered %s", d.Digest, dgst)
		}
		res.Manifests++
		sizes[dgst] = child.size
		if child.isIndex() {
			if err := c.walk(ctx, child, platform, depth+1, res, addBlobs, sizes); err != nil {
				return err
			}
			continue
		}
		matched++
		addBlobs(child)
	}
	if platform != nil && matched == 0 {
		return fmt.Errorf("no manifest for platform %s in the index", platform)
	}
	return nil
}

// manifest is what the warm client reads of a manifest or an index.
type manifest struct {
	MediaType string          `json:"mediaType"`
	Config    *v1.Descriptor  `json:"config"`
	Layers    []v1.Descriptor `json:"layers"`
	Manifests []v1.Descriptor `json:"manifests"`
	size      int64
}

func isIndexType(mt string) bool {
	return mt == v1.MediaTypeImageIndex || mt == mediaTypeDockerList
}

func (m *manifest) isIndex() bool { return isIndexType(m.MediaType) || m.Manifests != nil }

// blobs are what a pull of the image fetches: the config and every layer
// the registry serves (not the foreign layers, which come from their
// URLs).
func (m *manifest) blobs() []v1.Descriptor {
	var out []v1.Descriptor
	if m.Config != nil && m.Config.Digest != "" {
		out = append(out, *m.Config)
	}
	for _, l := range m.Layers {
		if len(l.URLs) > 0 || strings.Contains(l.MediaType, "foreign") || strings.Contains(l.MediaType, "nondistributable") {
			continue
		}
		out = append(out, l)
	}
	return out
}

const mediaTypeDockerList = "application/vnd.docker.distribution.manifest.list.v2+json"

var manifestAccept = strings.Join([]string{
	v1.MediaTypeImageIndex, v1.MediaTypeImageManifest,
	mediaTypeDockerList, "application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// maxManifestBytes bounds a manifest read (distribution's own limit is 4 MiB).
const maxManifestBytes = 4 << 20

// client asks the cache for one repository's content.
type client struct {
	w    *Warmer
	base string // scheme://host/v2/repo
}

func (c *client) do(ctx context.Context, method, url string, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.w.UserAgent != "" {
		req.Header.Set("User-Agent", c.w.UserAgent)
	}
	return c.w.Client.Do(req)
}

// manifest GETs a manifest by tag or digest.
func (c *client) manifest(ctx context.Context, reference string) (*manifest, digest.Digest, error) {
	resp, err := c.do(ctx, http.MethodGet, c.base+"/manifests/"+reference, http.Header{"Accept": {manifestAccept}})
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", reference, unwrapURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("manifest %s: %s", reference, answerError(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", reference, err)
	}
	if len(body) > maxManifestBytes {
		return nil, "", fmt.Errorf("manifest %s: larger than %d bytes", reference, maxManifestBytes)
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "", fmt.Errorf("manifest %s: not a manifest: %v", reference, err)
	}
	if m.MediaType == "" {
		m.MediaType = resp.Header.Get("Content-Type")
	}
	m.size = int64(len(body))
	return &m, digest.FromBytes(body), nil
}

// blobs brings every blob of order into storage, Concurrency at a time.
func (c *client) blobs(ctx context.Context, order []v1.Descriptor, ip ImageProgress) (fetched, present int, bytes int64, err error) {
	n := c.w.Concurrency
	if n <= 0 {
		n = 3
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, d := range order {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			wasStored, got, err := c.blob(ctx, d, ip)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				if firstErr == nil {
					firstErr = err
					cancel()
				}
			case wasStored:
				present++
			default:
				fetched++
				bytes += got
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return fetched, present, bytes, firstErr
}

// blob brings one blob into storage. A stored one is asked for its first
// byte only: the cache confirms with the origin that this credential may
// pull it from this repository, links it there and records the pull, and
// fetches nothing upstream. A missing one is fetched through the cache,
// which verifies it before keeping it.
func (c *client) blob(ctx context.Context, d v1.Descriptor, ip ImageProgress) (wasStored bool, n int64, err error) {
	wasStored, err = c.w.Storage.Stored(ctx, d.Digest)
	if err != nil {
		return false, 0, fmt.Errorf("blob %s: reading storage: %w", d.Digest, err)
	}
	hdr := http.Header{}
	if wasStored {
		hdr.Set("Range", "bytes=0-0")
	}
	resp, err := c.do(ctx, http.MethodGet, c.base+"/blobs/"+d.Digest.String(), hdr)
	if err != nil {
		return false, 0, fmt.Errorf("blob %s: %w", d.Digest, unwrapURL(err))
	}
	defer resp.Body.Close()
	switch {
	case wasStored && (resp.StatusCode == http.StatusPartialContent || resp.StatusCode == http.StatusOK ||
		resp.StatusCode == http.StatusTemporaryRedirect || resp.StatusCode == http.StatusFound):
		// Served from storage (or redirected to it): nothing more to read.
		ip.Bytes(d.Size)
		ip.BlobDone()
		return true, 0, nil
	case resp.StatusCode != http.StatusOK:
		return false, 0, fmt.Errorf("blob %s: %s", d.Digest, answerError(resp))
	}
	got, err := io.Copy(io.Discard, &counting{r: resp.Body, ip: ip})
	if err != nil {
		return false, got, fmt.Errorf("blob %s: after %d bytes: %w", d.Digest, got, err)
	}
	if got != d.Size {
		return false, got, fmt.Errorf("blob %s: %d bytes, the manifest says %d", d.Digest, got, d.Size)
	}
	if err := c.w.Storage.Settle(ctx, d.Digest); err != nil {
		return false, got, fmt.Errorf("blob %s: waiting for it to be stored: %w", d.Digest, err)
	}
	ip.BlobDone()
	return false, got, nil
}

// counting reports the bytes read.
type counting struct {
	r  io.Reader
	ip ImageProgress
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.ip.Bytes(int64(n))
	}
	return n, err
}

// answerError describes an error answer in one line: the status and the
// OCI error codes and messages, if any.
func answerError(resp *http.Response) string {
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	s := resp.Status
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &body) == nil {
		for _, e := range body.Errors {
			s += ": " + e.Code
			if e.Message != "" {
				s += " (" + e.Message + ")"
			}
		}
	}
	return strings.Join(strings.Fields(s), " ")
}

// unwrapURL drops the URL that net/http puts in front of transport errors:
// it names the registry's host, not where the request went.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
