package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// Defaults of the prefetch option's bounds.
const (
	// DefaultPrefetchPerManifest bounds the fills one manifest starts: its
	// config and first layers (images rarely have more).
	DefaultPrefetchPerManifest = 32
	// DefaultPrefetchTotal bounds the prefetched fills in flight at once,
	// across every client.
	DefaultPrefetchTotal = 64
)

// Prefetch: on serving an image manifest, the cache starts fills for its
// config and the layers it lacks (see httpapi/prefetch.go). Off by default.
type Prefetch struct {
	Enabled     bool
	PerManifest int // at most this many fills per manifest
	Total       int // at most this many prefetched fills in flight
}

const prefetchHelp = "true, false, or {permanifest: N, total: M} (positive integers; the map form turns prefetch on)"

// parsePrefetch reads `prefetch: true` or `prefetch: {permanifest, total}`.
func parsePrefetch(c *Config, v any) error {
	p := Prefetch{PerManifest: DefaultPrefetchPerManifest, Total: DefaultPrefetchTotal}
	if on, ok := v.(bool); ok {
		p.Enabled = on
		c.Prefetch = p
		return nil
	}
	obj, bad, ok := yamlopt.StringKeyed(v)
	if !ok {
		if bad != nil {
			return fmt.Errorf("downstream: option \"prefetch\": found a key %s, expected permanifest or total", yamlopt.Describe(bad))
		}
		return fmt.Errorf("downstream: option \"prefetch\": found %s, expected %s", yamlopt.Describe(v), prefetchHelp)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	p.Enabled = true
	for _, k := range keys {
		var dst *int
		switch strings.ToLower(k) {
		case "permanifest":
			dst = &p.PerManifest
		case "total":
			dst = &p.Total
		default:
			return fmt.Errorf("downstream: option \"prefetch\": unknown key %q; valid keys are permanifest, total", k)
		}
		n, ok := obj[k].(int)
		if !ok || n <= 0 {
			return fmt.Errorf("downstream: option \"prefetch.%s\": found %s, expected a positive integer", strings.ToLower(k), yamlopt.Describe(obj[k]))
		}
		*dst = n
	}
	c.Prefetch = p
	return nil
}
