package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// DefaultWarmInterval is how often the warm schedule runs when the warm
// block gives no interval.
const DefaultWarmInterval = 6 * time.Hour

// MinWarmInterval is the shortest interval accepted: a warm run asks the
// origin for every image's manifests.
const MinWarmInterval = time.Minute

// Warm is the `warm` option: images pulled into the cache on a schedule,
// before users ask for them (docs/warming.md).
type Warm struct {
	// Images as users name them (registry host/repository:tag or @digest);
	// without a registry host, the default registry's.
	Images []string
	// Refs are Images, parsed.
	Refs []ImageRef
	// Interval between runs.
	Interval time.Duration
	// Credentials is the path of a Docker config file (config.json) whose
	// credentials the warm runs pull with; "" for none. Read at each run,
	// so that a rotated secret is picked up.
	Credentials string
}

// ImageRef is an image as a user names it: the registry host as written
// ("" for a bare name: the default registry), the repository at that
// registry, and a tag or a digest.
type ImageRef struct {
	Host   string
	Repo   string
	Tag    string
	Digest digest.Digest
}

// String is the reference as the user wrote it, tag "latest" made explicit.
func (r ImageRef) String() string {
	s := r.Repo
	if r.Host != "" {
		s = r.Host + "/" + s
	}
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Reference is what to ask the registry's manifests endpoint for: the
// digest if given, else the tag.
func (r ImageRef) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

const (
	imageRefExamples = "registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>"
	imageRefHelp     = "an image reference such as " + imageRefExamples
	imagesHelp       = "a non-empty list of image references such as " + imageRefExamples
)

// ParseImageRef reads an image reference as docker does, except that a
// name without a registry host is the default registry's as it is
// (base/app stays base/app; no docker.io, no library/). The first
// component is a registry host when it holds a '.' or a ':' or is
// localhost. A missing tag and digest means the tag latest.
func ParseImageRef(s string) (ImageRef, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return ImageRef{}, fmt.Errorf("the reference is empty")
	}
	var r ImageRef
	rest := s
	if first, after, ok := strings.Cut(s, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		if _, err := NS(first); err != nil {
			return ImageRef{}, err
		}
		r.Host, rest = first, after
	}
	ref, err := reference.Parse(rest)
	if err != nil {
		return ImageRef{}, fmt.Errorf("%q: %v", s, err)
	}
	named, ok := ref.(reference.Named)
	if !ok {
		return ImageRef{}, fmt.Errorf("%q has no repository name", s)
	}
	r.Repo = named.Name()
	if strings.Contains(strings.SplitN(r.Repo, "/", 2)[0], ":") {
		return ImageRef{}, fmt.Errorf("%q: the registry host must come before the repository", s)
	}
	if t, ok := ref.(reference.Tagged); ok {
		r.Tag = t.Tag()
	}
	if d, ok := ref.(reference.Digested); ok {
		r.Digest = d.Digest()
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// ServedRegistry says which registry of the cache a host names, as
// requests' ns does (see docs/mirrors.md): "" for the default registry, a
// key of Registries for another, false for a registry the cache does not
// serve. An empty host is the default registry.
func (c Config) ServedRegistry(host string) (string, bool) {
	if host == "" {
		return "", true
	}
	canon, err := NS(host)
	if err != nil {
		return "", false
	}
	if sameHost(canon, c.Upstreams.Origin) {
		return "", true
	}
	if _, ok := c.Registries[canon]; ok {
		return canon, true
	}
	return "", false
}

// sameHost reports whether the canonical host[:port] ns names origin, the
// default port of origin's scheme counting as absent (as requests' ns).
func sameHost(ns string, origin *url.URL) bool {
	if origin == nil {
		return false
	}
	norm := func(h string) string {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if origin.Scheme == "http" {
			h = strings.TrimSuffix(h, ":80")
		} else {
			h = strings.TrimSuffix(h, ":443")
		}
		if slices.Contains(dockerHubNames, h) {
			return "docker.io"
		}
		return h
	}
	return norm(ns) == norm(origin.Host)
}

// dockerHubNames all name Docker Hub (as for ns: docs/mirrors.md).
var dockerHubNames = []string{"docker.io", "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com"}

// servedHelp lists the registries a warm image may name.
func (c Config) servedHelp() string {
	names := make([]string, 0, len(c.Registries))
	for n := range c.Registries {
		names = append(names, n)
	}
	sort.Strings(names)
	s := "the default registry's host (" + c.Upstreams.Origin.Host + ")"
	if len(names) > 0 {
		s += " or one of registries (" + strings.Join(names, ", ") + ")"
	}
	return s + ", or no host for the default registry"
}

// CheckServed checks that ref names a registry this cache serves; the
// error says which ones it does.
func (c Config) CheckServed(ref ImageRef) error {
	if _, ok := c.ServedRegistry(ref.Host); ok {
		return nil
	}
	return fmt.Errorf("%q names registry %s, which this cache does not serve; expected %s", ref.String(), ref.Host, c.servedHelp())
}

const warmHelp = "a mapping {images: [IMAGE, ...], interval: 6h, credentials: /path/to/docker-config.json}"

func parseWarm(c *Config, v any) error {
	if v == nil {
		return nil
	}
	m, bad, ok := yamlopt.StringKeyed(v)
	if !ok {
		if bad != nil {
			return fmt.Errorf("downstream: option \"warm\": found a key %s, expected %s", yamlopt.Describe(bad), warmHelp)
		}
		return fmt.Errorf("downstream: option \"warm\": found %s, expected %s", yamlopt.Describe(v), warmHelp)
	}
	w := Warm{Interval: DefaultWarmInterval}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		switch strings.ToLower(k) {
		case "images":
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				found := yamlopt.Describe(v)
				if ok {
					found = "an empty list"
				}
				return fmt.Errorf("downstream: option \"warm.images\": found %s, expected %s", found, imagesHelp)
			}
			for _, item := range list {
				s, ok := item.(string)
				if !ok {
					return fmt.Errorf("downstream: option \"warm.images\": found an item %s, expected %s", yamlopt.Describe(item), imageRefHelp)
				}
				ref, err := ParseImageRef(s)
				if err != nil {
					return fmt.Errorf("downstream: option \"warm.images\": %q is not an image reference (%v); expected %s", s, err, imageRefHelp)
				}
				w.Images = append(w.Images, s)
				w.Refs = append(w.Refs, ref)
			}
		case "interval":
			d, ok := yamlopt.Duration(v, false)
			if !ok || d < MinWarmInterval {
				return fmt.Errorf("downstream: option \"warm.interval\": found %s, expected a duration of at least %s such as 6h (units s, m, h)", yamlopt.Describe(v), ShortDuration(MinWarmInterval))
			}
			w.Interval = d
		case "credentials":
			p, ok := v.(string)
			if !ok {
				// Never the value: it may hold a password.
				return fmt.Errorf("downstream: option \"warm.credentials\": found %s, expected the path of a Docker config file (config.json); credentials are never inline", kindOf(v))
			}
			if err := CheckDockerConfig(p); err != nil {
				return fmt.Errorf("downstream: option \"warm.credentials\": %v", err)
			}
			w.Credentials = p
		default:
			return fmt.Errorf("downstream: option \"warm\": unknown key %q; valid keys are credentials, images, interval", k)
		}
	}
	if len(w.Images) == 0 {
		return fmt.Errorf("downstream: option \"warm.images\" is missing; expected %s", imagesHelp)
	}
	c.Warm = &w
	return nil
}

// checkWarmRegistries checks, once the registries are known, that every
// warm image names one the cache serves.
func (c Config) checkWarmRegistries() error {
	if c.Warm == nil {
		return nil
	}
	for _, ref := range c.Warm.Refs {
		if err := c.CheckServed(ref); err != nil {
			return fmt.Errorf("downstream: option \"warm.images\": %v", err)
		}
	}
	return nil
}

// CheckDockerConfig checks that path is a readable Docker config file: a
// JSON object (its auths are read at each warm run). The error never
// quotes the file's content.
func CheckDockerConfig(path string) error {
	if strings.TrimSpace(path) == "" {
		return fmt.Errorf("the path is empty; expected the path of a Docker config file (config.json)")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot read %q: %v; expected a readable Docker config file (config.json)", path, unwrapPathError(err))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return fmt.Errorf("%q is not a Docker config file (not a JSON object); expected a file such as docker login writes, {\"auths\": {...}}", path)
	}
	return nil
}

// kindOf names the YAML kind of v without its content.
func kindOf(v any) string {
	switch v.(type) {
	case map[any]any, map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case nil:
		return "nothing"
	case bool:
		return "a boolean"
	case int, int64, uint64, float64:
		return "a number"
	}
	return "a value that is not a path"
}
