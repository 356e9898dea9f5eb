package downstream

import (
	"github.com/content-cache/content-cache/downstream/internal/config"
)

// Config is the parsed and validated `options` block of the downstream
// middleware (see ParseOptions). The zero value is not valid: Upstreams
// must name an origin, and New refuses what Validate refuses.
type Config = config.Config

// Upstreams lists the registries the cache fetches from.
type Upstreams = config.Upstreams

// Defaults of the options of our own, documented in docs/configuration.md and configs/.
const (
	DefaultAuthTTL             = config.DefaultAuthTTL
	DefaultDialTimeout         = config.DefaultDialTimeout
	DefaultHeaderTimeout       = config.DefaultHeaderTimeout
	DefaultIdleTimeout         = config.DefaultIdleTimeout
	DefaultFillTimeout         = config.DefaultFillTimeout
	DefaultBackoff             = config.DefaultBackoff
	DefaultClientHeaderTimeout = config.DefaultClientHeaderTimeout
	DefaultClientIdleTimeout   = config.DefaultClientIdleTimeout
)

// ParseOptions turns the middleware's raw options (as YAML delivered them)
// into a validated Config. Every error names the option, the value found and
// what is expected.
func ParseOptions(raw map[string]any) (Config, error) { return config.Parse(raw) }
