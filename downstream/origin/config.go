package origin

import (
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// Defaults of the options. Each is documented in docs/configuration.md and
// configs/origin-transparent.yml.
const (
	// DefaultSignatureTTL is how long a redirect stays valid: long enough
	// for a client to follow it, short enough that a leaked URL is soon
	// worthless.
	DefaultSignatureTTL = 5 * time.Minute
	// DefaultProbeInterval is how often every cache's /v2/ is probed.
	DefaultProbeInterval = 10 * time.Second
	// DefaultProbeTimeout bounds one probe.
	DefaultProbeTimeout = 5 * time.Second
)

// Config is the parsed and validated `options` block of the middleware.
type Config struct {
	// Signer signs redirects (signingkey, keyid).
	Signer signature.Signer
	// PublishedKeys are served on the key endpoint: the signing key's
	// public half first, then publishkeys (keys still accepted during a
	// rotation).
	PublishedKeys []signature.PublicKey
	SignatureTTL  time.Duration
	// Admins may create and delete caches and set anyone's cache.
	Admins        []string
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// RootCAs verifies the caches' TLS certificates when probing: the
	// system roots plus the PEM files of option cas. Nil: system roots.
	RootCAs *x509.CertPool
	// Caches are declared in the configuration (beside those created
	// through the API).
	Caches []Cache
	// Users assigns users to caches; a user's own setting (API) wins.
	Users map[string]string
	// Networks assigns clients by address, first match wins; a user's
	// cache (setting or Users) wins over them.
	Networks []Network
	// Prefetch: an image manifest served to a user assigned to a cache
	// sends that cache the signed URLs of its blobs (prefetch.go).
	Prefetch bool
}

// Cache is a content cache the origin may redirect to.
type Cache struct {
	Name string `json:"name"`
	// Host is scheme://host[:port], where clients reach the cache.
	Host string `json:"host"`
}

// Network sends clients from Prefix to Cache.
type Network struct {
	Prefix netip.Prefix
	Cache  string
}

// option parses one accepted key of the options block.
type option func(c *Config, raw *rawKeys, v any) error

// rawKeys holds what needs every option read before it is checked.
type rawKeys struct {
	signingKey  string
	keyID       string
	publishKeys []string
}

// options returns the accepted keys; a function so nothing package-level
// is mutable.
func options() map[string]option {
	dur := func(key string, dst func(*Config) *time.Duration) option {
		return func(c *Config, _ *rawKeys, v any) error {
			d, err := parseDuration(key, v)
			*dst(c) = d
			return err
		}
	}
	return map[string]option{
		"signingkey": func(_ *Config, r *rawKeys, v any) error {
			s, err := stringOption("signingkey", v, "the path of a PEM Ed25519 private key (PKCS#8)")
			r.signingKey = s
			return err
		},
		"keyid": func(_ *Config, r *rawKeys, v any) error {
			s, err := stringOption("keyid", v, "a key id of letters, digits, '.', '_' or '-'")
			if err == nil && !validKeyID(s) {
				err = fmt.Errorf("%s: option \"keyid\": found %s, expected a key id of 1 to 64 letters, digits, '.', '_' or '-'", Name, yamlopt.Describe(v))
			}
			r.keyID = s
			return err
		},
		"publishkeys": func(_ *Config, r *rawKeys, v any) error {
			l, err := stringList("publishkeys", v, "a list of paths of PEM Ed25519 public keys (PKIX)")
			r.publishKeys = l
			return err
		},
		"admins": func(c *Config, _ *rawKeys, v any) error {
			l, err := stringList("admins", v, "a list of user names")
			c.Admins = l
			return err
		},
		"signaturettl":  dur("signaturettl", func(c *Config) *time.Duration { return &c.SignatureTTL }),
		"probeinterval": dur("probeinterval", func(c *Config) *time.Duration { return &c.ProbeInterval }),
		"probetimeout":  dur("probetimeout", func(c *Config) *time.Duration { return &c.ProbeTimeout }),
		"cas":           parseCAs,
		"caches":        parseCaches,
		"users":         parseUsers,
		"networks":      parseNetworks,
		"prefetch":      parsePrefetch,
	}
}

// validKeyID keeps key ids printable and short: they travel in URLs.
func validKeyID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !isLower(r) && !isDigit(r) && !(r >= 'A' && r <= 'Z') && r != '.' && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

// validCacheName accepts a DNS-label-like name ("region-asia"): names are
// used in storage paths, metric labels and signatures.
func validCacheName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		edge := i == 0 || i == len(s)-1
		if !isLower(r) && !isDigit(r) && (edge || (r != '.' && r != '_' && r != '-')) {
			return false
		}
	}
	return true
}

func isLower(r rune) bool { return r >= 'a' && r <= 'z' }
func isDigit(r rune) bool { return r >= '0' && r <= '9' }

// reservedNames cannot name a cache: they are paths of the API.
func reservedName(name string) bool { return name == "keys" }

const cacheNameHelp = "a name of lowercase letters, digits, '.', '_' or '-' (at most 63, starting and ending with a letter or digit), not \"keys\""

// ParseOptions turns the middleware's raw options (as YAML delivered them)
// into a validated Config, reading the key files. Every error names the
// option, the value found and what is expected.
func ParseOptions(raw map[string]any) (Config, error) {
	c := Config{
		SignatureTTL:  DefaultSignatureTTL,
		ProbeInterval: DefaultProbeInterval,
		ProbeTimeout:  DefaultProbeTimeout,
	}
	var r rawKeys
	known := options()
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first bad key, deterministically
	for _, k := range keys {
		if strings.HasPrefix(k, internalKeyPrefix) {
			continue
		}
		parse, ok := known[strings.ToLower(k)]
		if !ok {
			return Config{}, fmt.Errorf("%s: unknown option %q; valid options are %s", Name, k, yamlopt.Keys(known))
		}
		if err := parse(&c, &r, raw[k]); err != nil {
			return Config{}, err
		}
	}
	if err := c.loadKeys(r); err != nil {
		return Config{}, err
	}
	static := map[string]bool{}
	for _, cc := range c.Caches {
		static[cc.Name] = true
	}
	users := make([]string, 0, len(c.Users))
	for u := range c.Users {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		if !static[c.Users[u]] {
			return Config{}, fmt.Errorf("%s: option \"users\": user %q is assigned to cache %q, which option \"caches\" does not list; expected one of %s", Name, u, c.Users[u], cacheNames(c.Caches))
		}
	}
	for i, n := range c.Networks {
		if !static[n.Cache] {
			return Config{}, fmt.Errorf("%s: option \"networks\": item %d (%s) names cache %q, which option \"caches\" does not list; expected one of %s", Name, i+1, n.Prefix, n.Cache, cacheNames(c.Caches))
		}
	}
	return c, nil
}

func (c *Config) loadKeys(r rawKeys) error {
	if r.signingKey == "" {
		return fmt.Errorf("%s: option \"signingkey\" is missing; expected the path of a PEM Ed25519 private key (PKCS#8), e.g. from `openssl genpkey -algorithm ed25519`", Name)
	}
	data, err := os.ReadFile(r.signingKey)
	if err != nil {
		return fmt.Errorf("%s: option \"signingkey\": %v; expected a readable PEM Ed25519 private key (PKCS#8)", Name, err)
	}
	priv, err := signature.ParsePrivateKeyPEM(data)
	if err != nil {
		return fmt.Errorf("%s: option \"signingkey\": %s: %v", Name, r.signingKey, err)
	}
	pub := priv.Public().(ed25519.PublicKey)
	id := r.keyID
	if id == "" {
		if id, err = signature.Thumbprint(pub); err != nil {
			return fmt.Errorf("%s: option \"signingkey\": %v", Name, err)
		}
	}
	c.Signer = signature.Signer{KeyID: id, PrivateKey: priv}
	c.PublishedKeys = []signature.PublicKey{{ID: id, Key: pub}}
	seen := map[string]string{id: "signingkey"}
	for _, path := range r.publishKeys {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s: option \"publishkeys\": %v; expected a readable PEM Ed25519 public key (PKIX)", Name, err)
		}
		k, err := signature.ParsePublicKeyPEM(data)
		if err != nil {
			return fmt.Errorf("%s: option \"publishkeys\": %s: %v", Name, path, err)
		}
		kid, err := signature.Thumbprint(k)
		if err != nil {
			return fmt.Errorf("%s: option \"publishkeys\": %v", Name, err)
		}
		if prev, dup := seen[kid]; dup {
			return fmt.Errorf("%s: option \"publishkeys\": %s is the same key as %s (key id %s); expected each key once", Name, path, prev, kid)
		}
		seen[kid] = path
		c.PublishedKeys = append(c.PublishedKeys, signature.PublicKey{ID: kid, Key: k})
	}
	return nil
}

// parseCAs loads the CA certificates a probe trusts besides the system
// roots: a cache with a private CA would otherwise count as dead.
func parseCAs(c *Config, _ *rawKeys, v any) error {
	paths, err := stringList("cas", v, "a list of paths of PEM CA certificates")
	if err != nil {
		return err
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("%s: option \"cas\": %v; expected a readable PEM CA certificate", Name, err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return fmt.Errorf("%s: option \"cas\": %s holds no PEM certificate; expected a PEM CA certificate", Name, p)
		}
	}
	c.RootCAs = pool
	return nil
}

func parseCaches(c *Config, _ *rawKeys, v any) error {
	const help = "a list of {name: NAME, host: https://host[:port]}"
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("%s: option \"caches\": found %s, expected %s", Name, yamlopt.Describe(v), help)
	}
	seen := map[string]bool{}
	for i, item := range list {
		m, ok := stringKeyed(item)
		if !ok {
			return fmt.Errorf("%s: option \"caches\": item %d is %s, expected {name: NAME, host: URL}", Name, i+1, yamlopt.Describe(item))
		}
		for k := range m {
			if k != "name" && k != "host" {
				return fmt.Errorf("%s: option \"caches\": item %d has unknown key %q; valid keys are host, name", Name, i+1, k)
			}
		}
		name, _ := m["name"].(string)
		host, _ := m["host"].(string)
		cc, err := NewCache(name, host)
		if err != nil {
			return fmt.Errorf("%s: option \"caches\": item %d: %v", Name, i+1, err)
		}
		if seen[cc.Name] {
			return fmt.Errorf("%s: option \"caches\": item %d: cache %q is listed twice; expected each name once", Name, i+1, cc.Name)
		}
		seen[cc.Name] = true
		c.Caches = append(c.Caches, cc)
	}
	return nil
}

// NewCache validates a cache's name and host (from the configuration or
// the API); the error says what is expected.
func NewCache(name, host string) (Cache, error) {
	if !validCacheName(name) || reservedName(name) {
		return Cache{}, fmt.Errorf("name %q is not valid; expected %s", name, cacheNameHelp)
	}
	u, err := url.Parse(strings.TrimSpace(host))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		shown := host
		if err == nil && u.User != nil {
			shown = u.Redacted()
		}
		return Cache{}, fmt.Errorf("host %q is not valid; expected http:// or https:// followed by host[:port] and nothing else", shown)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return Cache{}, fmt.Errorf("host %q has port %s; expected a port from 1 to 65535", host, p)
		}
	}
	return Cache{Name: name, Host: u.Scheme + "://" + strings.ToLower(u.Host)}, nil
}

func parseUsers(c *Config, _ *rawKeys, v any) error {
	m, ok := stringKeyed(v)
	if !ok {
		return fmt.Errorf("%s: option \"users\": found %s, expected a mapping of user name to cache name", Name, yamlopt.Describe(v))
	}
	c.Users = make(map[string]string, len(m))
	users := make([]string, 0, len(m))
	for u := range m {
		users = append(users, u)
	}
	sort.Strings(users) // the first bad user, deterministically
	for _, u := range users {
		val := m[u]
		s, ok := val.(string)
		if !ok || u == "" {
			return fmt.Errorf("%s: option \"users\": user %q is assigned %s, expected a cache name", Name, u, yamlopt.Describe(val))
		}
		c.Users[u] = s
	}
	return nil
}

func parseNetworks(c *Config, _ *rawKeys, v any) error {
	const help = "a list of {cidr: 10.0.0.0/8, cache: NAME}"
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("%s: option \"networks\": found %s, expected %s", Name, yamlopt.Describe(v), help)
	}
	for i, item := range list {
		m, ok := stringKeyed(item)
		if !ok {
			return fmt.Errorf("%s: option \"networks\": item %d is %s, expected {cidr: 10.0.0.0/8, cache: NAME}", Name, i+1, yamlopt.Describe(item))
		}
		for k := range m {
			if k != "cidr" && k != "cache" {
				return fmt.Errorf("%s: option \"networks\": item %d has unknown key %q; valid keys are cache, cidr", Name, i+1, k)
			}
		}
		cidr, _ := m["cidr"].(string)
		p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
		if err != nil {
			return fmt.Errorf("%s: option \"networks\": item %d: cidr %s is not valid; expected a network such as 10.20.0.0/16 or fd00::/8", Name, i+1, yamlopt.Describe(m["cidr"]))
		}
		if p != p.Masked() {
			return fmt.Errorf("%s: option \"networks\": item %d: cidr %q has host bits set; expected %s", Name, i+1, cidr, p.Masked())
		}
		name, _ := m["cache"].(string)
		if name == "" {
			return fmt.Errorf("%s: option \"networks\": item %d: cache %s, expected a cache name", Name, i+1, yamlopt.Describe(m["cache"]))
		}
		c.Networks = append(c.Networks, Network{Prefix: p, Cache: name})
	}
	return nil
}

func stringOption(key string, v any, help string) (string, error) {
	s, ok := v.(string)
	if !ok || strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%s: option %q: found %s, expected %s", Name, key, yamlopt.Describe(v), help)
	}
	return strings.TrimSpace(s), nil
}

func stringList(key string, v any, help string) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: option %q: found %s, expected %s", Name, key, yamlopt.Describe(v), help)
	}
	out := make([]string, 0, len(list))
	for _, item := range list {
		s, ok := item.(string)
		if !ok || s == "" {
			return nil, fmt.Errorf("%s: option %q: found an item %s, expected %s", Name, key, yamlopt.Describe(item), help)
		}
		out = append(out, s)
	}
	return out, nil
}

const durationHelp = "a positive duration such as 5m (units ns, us, ms, s, m, h; a bare integer means nanoseconds)"

// parseDuration reads durations the way the downstream middleware does: a
// string with a unit, or a bare integer of nanoseconds.
func parseDuration(key string, v any) (time.Duration, error) {
	d, ok := yamlopt.Duration(v, false)
	if !ok {
		return 0, fmt.Errorf("%s: option %q: found %s, expected %s", Name, key, yamlopt.Describe(v), durationHelp)
	}
	return d, nil
}

func stringKeyed(v any) (map[string]any, bool) {
	m, _, ok := yamlopt.StringKeyed(v)
	return m, ok
}

func cacheNames(caches []Cache) string {
	if len(caches) == 0 {
		return "a cache listed in option \"caches\" (none are)"
	}
	names := make([]string, 0, len(caches))
	for _, c := range caches {
		names = append(names, strconv.Quote(c.Name))
	}
	return strings.Join(names, ", ")
}
