package config

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// InternalKeyPrefix marks keys the middleware adds to its own options map:
// Parse skips them.
const InternalKeyPrefix = "\x00downstream."

// Defaults of the options of our own. Each is documented in docs/configuration.md and
// configs/.
const (
	// DefaultAuthTTL is how long an "allowed" answer of the origin is reused
	// for one credential and one repository. Denials are never reused.
	DefaultAuthTTL = 30 * time.Second
	// DefaultDialTimeout bounds connecting to an upstream (TCP and TLS).
	DefaultDialTimeout = 10 * time.Second
	// DefaultHeaderTimeout bounds the wait for an upstream's response headers.
	DefaultHeaderTimeout = 30 * time.Second
	// DefaultIdleTimeout bounds the wait for the next byte of an upstream body.
	DefaultIdleTimeout = 60 * time.Second
	// DefaultFillTimeout bounds one whole blob fill, so that a fill nobody
	// waits for any more cannot run forever.
	DefaultFillTimeout = time.Hour
	// DefaultBackoff is how long an upstream that failed is skipped before
	// it is tried again.
	DefaultBackoff = 30 * time.Second
	// DefaultClientHeaderTimeout bounds how long a client may take to send
	// a request's headers (and the TLS handshake): generous for a slow
	// mobile link, short enough that connections trickling their headers
	// do not pile up.
	DefaultClientHeaderTimeout = 60 * time.Second
	// DefaultClientIdleTimeout bounds how long a client's keep-alive
	// connection may wait for its next request.
	DefaultClientIdleTimeout = 2 * time.Minute
)

// Config is the parsed and validated `options` block of the downstream
// middleware. The zero value is not valid: Upstreams must name an origin.
type Config struct {
	// BlobTTL: content nobody pulled for this long expires. 0: never.
	BlobTTL time.Duration
	// Upstreams is where content comes from, in the order to try.
	Upstreams Upstreams
	// CAs are PEM files trusted for upstream TLS besides the system roots.
	CAs []string
	// caCerts are the certificates of CAs, read once by Parse.
	caCerts []*x509.Certificate
	// AuthTTL is the lifetime of a cached "allowed" decision. 0: ask every time.
	AuthTTL       time.Duration
	DialTimeout   time.Duration
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration
	FillTimeout   time.Duration
	// Backoff: an upstream that failed is skipped for this long.
	Backoff time.Duration
	// ClientHeaderTimeout and ClientIdleTimeout are the cache's own HTTP
	// server's: the time a client may take to send a request's headers, and
	// to start its next request on a kept-alive connection.
	ClientHeaderTimeout time.Duration
	ClientIdleTimeout   time.Duration
	// Signing: the origin's signed blob URLs are accepted (see signing.go).
	Signing *Signing
	// Redis turns replicas on: they coordinate through it (see redis.go).
	// Nil: a single node, with everything in memory.
	Redis *Redis
	// Advertise is the URL the other replicas reach this one at. Nil: the
	// loopback address at http.addr's port, which works for replicas on one
	// host.
	Advertise *url.URL
	// Anonymous is the default registry's account for requests that carry
	// no credentials (registries.go); nil: none.
	Anonymous *Anonymous
	// Registries are the other registries the cache serves, by canonical
	// ns (see NS); the top-level options are the default registry.
	Registries map[string]Registry
	// OfflineGrace: while no upstream answers, stored content is served to
	// credentials the origin allowed less than this long ago. 0: off.
	OfflineGrace time.Duration
	// MaxSize bounds stored data, in bytes: past it, content goes by least
	// recent pull down to LowWatermark percent of it. 0: no bound.
	MaxSize int64
	// LowWatermark is the percentage of MaxSize eviction brings stored
	// data down to (1-99; DefaultLowWatermark when 0).
	LowWatermark int
	// Pin lists repository globs (path.Match) whose content the size bound
	// never evicts.
	Pin []string
	// Prefetch: fills started on serving an image manifest (prefetch.go).
	Prefetch Prefetch
	// Warm: images pulled in on a schedule (warm.go); nil: none.
	Warm *Warm
}

// Validate checks a Config built in code rather than by ParseOptions (which
// returns only valid ones): New refuses what would fail every request.
func (c Config) Validate() error {
	if c.Upstreams.Origin == nil {
		return errors.New("downstream: Config.Upstreams.Origin is nil; expected the origin's URL (ParseOptions fills it from the upstreams option)")
	}
	for _, u := range c.Upstreams.Hosts() {
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("downstream: Config.Upstreams holds %q; expected http:// or https:// and a host", u)
		}
	}
	for name, r := range c.Registries {
		if canon, err := NS(name); err != nil || canon != name {
			return fmt.Errorf("downstream: Config.Registries has the key %q; expected a canonical registry host[:port] (config.NS)", name)
		}
		if r.Upstreams.Origin == nil {
			return fmt.Errorf("downstream: Config.Registries[%q].Upstreams.Origin is nil; expected the registry's URL", name)
		}
		for _, u := range r.Upstreams.Hosts() {
			if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("downstream: Config.Registries[%q].Upstreams holds %q; expected http:// or https:// and a host", name, u)
			}
		}
		if r.DialTimeout <= 0 || r.HeaderTimeout <= 0 || r.IdleTimeout <= 0 || r.Backoff <= 0 || r.AuthTTL < 0 {
			return fmt.Errorf("downstream: Config.Registries[%q] has a timeout, backoff or authttl out of range; expected positive durations (authttl >= 0)", name)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		zero bool
	}{
		{"BlobTTL", c.BlobTTL, true},
		{"AuthTTL", c.AuthTTL, true},
		{"DialTimeout", c.DialTimeout, false},
		{"HeaderTimeout", c.HeaderTimeout, false},
		{"IdleTimeout", c.IdleTimeout, false},
		{"FillTimeout", c.FillTimeout, false},
		{"Backoff", c.Backoff, false},
		{"ClientHeaderTimeout", c.ClientHeaderTimeout, false},
		{"ClientIdleTimeout", c.ClientIdleTimeout, false},
		{"OfflineGrace", c.OfflineGrace, true},
	} {
		if d.v < 0 || d.v == 0 && !d.zero {
			want := "a positive duration"
			if d.zero {
				want = "a duration >= 0"
			}
			return fmt.Errorf("downstream: Config.%s is %s; expected %s", d.name, d.v, want)
		}
	}
	return nil
}

// Upstreams lists the registries the cache fetches from. Origin is the
// registry that owns the content; Caches are content caches nearer to it
// (the DTR form's upstreamhosts). In the URL-list form every URL is an
// equivalent upstream and Origin is the last of them.
type Upstreams struct {
	Origin *url.URL
	Caches []*url.URL
	// Equivalent is set for the URL-list form: requests go round-robin
	// across every URL, the origin included. In the DTR form they go
	// round-robin across Caches, with Origin as the last resort.
	Equivalent bool
}

// Hosts returns every upstream in the order to try: caches first, then the
// origin as the last resort.
func (u Upstreams) Hosts() []*url.URL {
	hosts := make([]*url.URL, 0, len(u.Caches)+1)
	hosts = append(hosts, u.Caches...)
	if u.Origin != nil {
		hosts = append(hosts, u.Origin)
	}
	return hosts
}

// option describes one accepted key of the options block.
type option struct {
	parse func(c *Config, v any) error
}

// options returns the accepted keys. A function, not a package variable, so
// that nothing package-level is mutable.
func options() map[string]option {
	dur := func(key string, dst func(c *Config) *time.Duration, allowZero bool) option {
		return option{
			parse: func(c *Config, v any) error {
				d, err := parseDuration(key, v, allowZero)
				if err != nil {
					return err
				}
				*dst(c) = d
				return nil
			},
		}
	}
	return map[string]option{
		"blobttl":             dur("blobttl", func(c *Config) *time.Duration { return &c.BlobTTL }, false),
		"authttl":             dur("authttl", func(c *Config) *time.Duration { return &c.AuthTTL }, true),
		"dialtimeout":         dur("dialtimeout", func(c *Config) *time.Duration { return &c.DialTimeout }, false),
		"headertimeout":       dur("headertimeout", func(c *Config) *time.Duration { return &c.HeaderTimeout }, false),
		"idletimeout":         dur("idletimeout", func(c *Config) *time.Duration { return &c.IdleTimeout }, false),
		"filltimeout":         dur("filltimeout", func(c *Config) *time.Duration { return &c.FillTimeout }, false),
		"backoff":             dur("backoff", func(c *Config) *time.Duration { return &c.Backoff }, false),
		"clientheadertimeout": dur("clientheadertimeout", func(c *Config) *time.Duration { return &c.ClientHeaderTimeout }, false),
		"clientidletimeout":   dur("clientidletimeout", func(c *Config) *time.Duration { return &c.ClientIdleTimeout }, false),
		"maxsize":             {parse: parseMaxSize},
		"lowwatermark":        {parse: parseLowWatermark},
		"pin":                 {parse: parsePin},
		"offlinegrace":        dur("offlinegrace", func(c *Config) *time.Duration { return &c.OfflineGrace }, true),
		"upstreams":           {parse: parseUpstreams},
		"cas":                 {parse: parseCAs},
		"signing":             {parse: parseSigning},
		"redis":               {parse: parseRedis},
		"advertise":           {parse: parseAdvertise},
		"anonymous":           {parse: parseAnonymous},
		"registries":          {parse: parseRegistries},
		"prefetch":            {parse: parsePrefetch},
		"warm":                {parse: parseWarm},
	}
}

// Parse turns the middleware's raw options (as YAML delivered them)
// into a validated Config. Every error names the option, the value found and
// what is expected.
func Parse(raw map[string]any) (Config, error) {
	c := Config{
		AuthTTL:       DefaultAuthTTL,
		DialTimeout:   DefaultDialTimeout,
		HeaderTimeout: DefaultHeaderTimeout,
		IdleTimeout:   DefaultIdleTimeout,
		FillTimeout:   DefaultFillTimeout,
		Backoff:       DefaultBackoff,

		ClientHeaderTimeout: DefaultClientHeaderTimeout,
		ClientIdleTimeout:   DefaultClientIdleTimeout,
	}
	known := options()
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)      // report the first bad key deterministically
	var registries []string // parsed last: their entries inherit the top level's timeouts
	for _, k := range keys {
		if strings.HasPrefix(k, InternalKeyPrefix) {
			continue
		}
		opt, ok := known[strings.ToLower(k)]
		if !ok {
			return Config{}, fmt.Errorf("downstream: unknown option %q; valid options are %s", k, yamlopt.Keys(known))
		}
		if strings.ToLower(k) == "registries" {
			registries = append(registries, k)
			continue
		}
		if err := opt.parse(&c, raw[k]); err != nil {
			return Config{}, err
		}
	}
	if c.Upstreams.Origin == nil {
		return Config{}, fmt.Errorf("downstream: option \"upstreams\" is missing; expected %s", upstreamsHelp)
	}
	if len(registries) > 1 {
		return Config{}, fmt.Errorf("downstream: option \"registries\" is given %d times (%s); expected once", len(registries), strings.Join(registries, ", "))
	}
	for _, k := range registries {
		if err := parseRegistries(&c, raw[k]); err != nil {
			return Config{}, err
		}
	}
	if err := c.checkWarmRegistries(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Roots returns the certificates trusted for the default registry's
// upstream TLS (see Registry.Roots).
func (c Config) Roots() (*x509.CertPool, error) { return c.Default().Roots() }

// Roots returns the certificates trusted for upstream TLS: the system's
// roots plus those of CAs, as Parse read them (a Config built in code has
// its CAs read now).
func (c Registry) Roots() (*x509.CertPool, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	certs := c.caCerts
	if certs == nil {
		for _, p := range c.CAs {
			more, err := readPEM(p)
			if err != nil {
				return nil, err
			}
			certs = append(certs, more...)
		}
	}
	for _, cert := range certs {
		roots.AddCert(cert)
	}
	return roots, nil
}

// ShortDuration prints d without the zero minutes and seconds that
// time.Duration.String adds: 24h, 1h30m, 10s.
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

const durationHelp = "a positive duration such as 24h (units ns, us, ms, s, m, h; a bare integer means nanoseconds)"

// parseDuration follows the seed docs: an integer with an optional unit
// suffix, a bare integer meaning nanoseconds. YAML delivers "24h" as a string
// and 86400 as an integer.
func parseDuration(key string, v any, allowZero bool) (time.Duration, error) {
	help := durationHelp
	if allowZero {
		help = "a duration such as 30s, or 0 to turn it off (units ns, us, ms, s, m, h; a bare integer means nanoseconds)"
	}
	d, ok := yamlopt.Duration(v, allowZero)
	if !ok {
		return 0, fmt.Errorf("downstream: option %q: found %s, expected %s", key, yamlopt.Describe(v), help)
	}
	return d, nil
}

const upstreamsHelp = "a list of upstream URLs (https://host:port) or a list with one {originhost: URL, upstreamhosts: [URL, ...]}"

func parseUpstreams(c *Config, v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("downstream: option \"upstreams\": found %s, expected %s", yamlopt.Describe(v), upstreamsHelp)
	}
	if len(list) == 0 {
		return fmt.Errorf("downstream: option \"upstreams\": the list is empty, expected %s", upstreamsHelp)
	}
	var urls, objects int
	for _, item := range list {
		switch item.(type) {
		case string:
			urls++
		case map[any]any, map[string]any:
			objects++
		default:
			return fmt.Errorf("downstream: option \"upstreams\": found an item %s, expected %s", yamlopt.Describe(item), upstreamsHelp)
		}
	}
	if urls > 0 && objects > 0 {
		return fmt.Errorf("downstream: option \"upstreams\": mixes URLs and {originhost, upstreamhosts} objects; expected one form only")
	}
	// seen maps each upstream, default port made explicit (https://h and
	// https://h:443 are one upstream), to where it was first listed.
	type listed struct{ key, raw string }
	seen := map[string]listed{}
	add := func(key, raw string) (*url.URL, error) {
		u, err := parseUpstreamURL(key, raw)
		if err != nil {
			return nil, err
		}
		id := upstreamID(u)
		if prev, dup := seen[id]; dup {
			switch {
			case prev.key != key:
				return nil, fmt.Errorf("downstream: option %q: %q is already listed in %s; expected each upstream once", key, raw, prev.key)
			case prev.raw != raw:
				return nil, fmt.Errorf("downstream: option %q: %q is the same upstream as %q; expected each upstream once", key, raw, prev.raw)
			default:
				return nil, fmt.Errorf("downstream: option %q: %q is listed twice; expected each upstream once", key, raw)
			}
		}
		seen[id] = listed{key, raw}
		return u, nil
	}
	if urls > 0 {
		var hosts []*url.URL
		for _, item := range list {
			u, err := add("upstreams", item.(string))
			if err != nil {
				return err
			}
			hosts = append(hosts, u)
		}
		// Every URL of this form is an equivalent upstream; the last one
		// stands as the origin so that Hosts() keeps the configured order.
		c.Upstreams = Upstreams{Origin: hosts[len(hosts)-1], Caches: hosts[:len(hosts)-1], Equivalent: true}
		return nil
	}
	if len(list) > 1 {
		return fmt.Errorf("downstream: option \"upstreams\": found %d {originhost, upstreamhosts} objects, expected exactly one (a cache has one origin)", len(list))
	}
	obj, err := stringKeyed(list[0])
	if err != nil {
		return err
	}
	// Keys in a fixed order (unknown keys first, then originhost, then
	// upstreamhosts) so that the same mistake always gives the same message.
	var originRaw, hostsRaw any
	var hasOrigin, hasHosts bool
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch strings.ToLower(k) {
		case "originhost":
			originRaw, hasOrigin = obj[k], true
		case "upstreamhosts":
			hostsRaw, hasHosts = obj[k], true
		default:
			return fmt.Errorf("downstream: option \"upstreams\": unknown key %q in the {originhost, upstreamhosts} object; valid keys are originhost, upstreamhosts", k)
		}
	}
	if !hasOrigin || originRaw == nil {
		return fmt.Errorf("downstream: option \"upstreams.originhost\" is missing; expected the origin registry's URL such as https://registry.example.com")
	}
	var ups Upstreams
	s, ok := originRaw.(string)
	if !ok {
		return fmt.Errorf("downstream: option \"upstreams.originhost\": found %s, expected a URL such as https://registry.example.com", yamlopt.Describe(originRaw))
	}
	if ups.Origin, err = add("upstreams.originhost", s); err != nil {
		return err
	}
	if hasHosts {
		hl, ok := hostsRaw.([]any)
		if !ok && hostsRaw != nil {
			return fmt.Errorf("downstream: option \"upstreams.upstreamhosts\": found %s, expected a list of URLs", yamlopt.Describe(hostsRaw))
		}
		for _, h := range hl {
			s, ok := h.(string)
			if !ok {
				return fmt.Errorf("downstream: option \"upstreams.upstreamhosts\": found an item %s, expected a URL", yamlopt.Describe(h))
			}
			u, err := add("upstreams.upstreamhosts", s)
			if err != nil {
				return err
			}
			ups.Caches = append(ups.Caches, u)
		}
	}
	c.Upstreams = ups
	return nil
}

func stringKeyed(v any) (map[string]any, error) {
	m, bad, ok := yamlopt.StringKeyed(v)
	switch {
	case ok:
		return m, nil
	case bad != nil:
		return nil, fmt.Errorf("downstream: option \"upstreams\": found a key %s in the {originhost, upstreamhosts} object, expected originhost or upstreamhosts", yamlopt.Describe(bad))
	}
	return nil, fmt.Errorf("downstream: option \"upstreams\": found %s, expected %s", yamlopt.Describe(v), upstreamsHelp)
}

// parseUpstreamURL accepts http(s)://host[:port] and nothing more: a path
// would silently change every request's URL.
func parseUpstreamURL(key, raw string) (*url.URL, error) {
	trimmed := strings.TrimSpace(raw)
	u, err := url.Parse(trimmed)
	if err == nil && u.User != nil {
		// Never echo a password: credentials are the clients' own, passed
		// through per request, never configured.
		return nil, fmt.Errorf("downstream: option %q: %q has user information; expected only scheme://host[:port] (each client's own credentials are forwarded)", key, u.Redacted())
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("downstream: option %q: %q is not an upstream URL; expected http:// or https:// followed by host[:port]", key, raw)
	}
	what := ""
	switch {
	case u.Path != "" && u.Path != "/":
		what = "a path"
	case u.RawQuery != "" || u.ForceQuery:
		what = "a query"
	case strings.Contains(trimmed, "#"):
		what = "a fragment"
	}
	if what != "" {
		return nil, fmt.Errorf("downstream: option %q: %q has %s; expected only scheme://host[:port]", key, raw, what)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("downstream: option %q: %q has port %s; expected a port from 1 to 65535", key, raw, p)
		}
	}
	return &url.URL{Scheme: u.Scheme, Host: strings.ToLower(u.Host)}, nil
}

// upstreamID identifies an upstream for the duplicate check: scheme, host
// and port, the scheme's default port made explicit.
func upstreamID(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func parseCAs(c *Config, v any) error {
	list, ok := v.([]any)
	if !ok {
		if v == nil {
			return nil
		}
		return fmt.Errorf("downstream: option \"cas\": found %s, expected a list of absolute paths to PEM CA certificates", yamlopt.Describe(v))
	}
	for _, item := range list {
		p, ok := item.(string)
		if !ok {
			return fmt.Errorf("downstream: option \"cas\": found an item %s, expected an absolute path to a PEM CA certificate", yamlopt.Describe(item))
		}
		if !filepath.IsAbs(p) {
			return fmt.Errorf("downstream: option \"cas\": %q is not an absolute path; expected an absolute path to a PEM CA certificate", p)
		}
		certs, err := readPEM(p)
		if err != nil {
			return err
		}
		c.CAs = append(c.CAs, p)
		c.caCerts = append(c.caCerts, certs...)
	}
	return nil
}

// readPEM reads the certificates of a CA file, once: the pool of trusted
// roots is built from them (Roots), the file is not read again.
func readPEM(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("downstream: option \"cas\": cannot read %q: %v; expected a readable PEM CA certificate", path, unwrapPathError(err))
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			certs = append(certs, cert)
		}
	}
	if len(certs) > 0 {
		return certs, nil
	}
	return nil, fmt.Errorf("downstream: option \"cas\": %q holds no PEM certificate; expected at least one -----BEGIN CERTIFICATE----- block", path)
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
