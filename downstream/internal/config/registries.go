package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// Registry is one registry the cache serves: its upstream set and how it
// is asked. The top-level options are the default registry (Config.Default);
// each entry of the registries option is another, selected by the ns query
// parameter (OCI distribution-spec, "Registry Proxying").
type Registry struct {
	// Name is the ns that selects the registry, canonical (NS); "" for
	// the default registry.
	Name      string
	Upstreams Upstreams
	// CAs are PEM files trusted for this registry's upstream TLS besides
	// the system roots; caCerts are their certificates, read once by Parse.
	CAs     []string
	caCerts []*x509.Certificate
	// AuthTTL is the lifetime of a cached "allowed" decision. 0: ask every time.
	AuthTTL       time.Duration
	DialTimeout   time.Duration
	HeaderTimeout time.Duration
	IdleTimeout   time.Duration
	Backoff       time.Duration
	// Anonymous is the account requests without credentials are asked
	// with; nil: they go upstream without credentials, as they came.
	Anonymous *Anonymous
}

// Anonymous is an account of a registry that the cache uses for requests
// that carry no credentials (opt-in: the anonymous option).
type Anonymous struct {
	Username string
	// PasswordFile holds the password or token (a trailing newline is
	// dropped); read once, by Parse or by Secret.
	PasswordFile string
	password     string
}

// Secret returns the account's password, reading PasswordFile if Parse
// did not (a Config built in code).
func (a *Anonymous) Secret() (string, error) {
	if a.password != "" {
		return a.password, nil
	}
	return readPasswordFile("anonymous", a.PasswordFile)
}

// Default is the default registry: the top-level options, for requests
// with no ns or with an ns naming the default registry's origin.
func (c Config) Default() Registry {
	return Registry{
		Upstreams: c.Upstreams, CAs: c.CAs, caCerts: c.caCerts,
		AuthTTL: c.AuthTTL, DialTimeout: c.DialTimeout, HeaderTimeout: c.HeaderTimeout, IdleTimeout: c.IdleTimeout,
		Backoff: c.Backoff, Anonymous: c.Anonymous,
	}
}

// All is every registry: the default one first, then the registries
// option's in name order.
func (c Config) All() []Registry {
	out := []Registry{c.Default()}
	names := make([]string, 0, len(c.Registries))
	for n := range c.Registries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := c.Registries[n]
		r.Name = n
		out = append(out, r)
	}
	return out
}

// Label names a registry in metrics and logs: its ns, or for the default
// registry its origin's host[:port].
func (r Registry) Label() string {
	if r.Name != "" {
		return r.Name
	}
	if r.Upstreams.Origin != nil {
		return r.Upstreams.Origin.Host
	}
	return ""
}

// NS reads an ns value (host[:port], no scheme) into its canonical form:
// lower case, no port 443, and docker.io for every name of Docker Hub.
// Anything else (a scheme, a path, two ports, an empty host) is an error:
// a malformed ns must never be read as some registry.
func NS(ns string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%q is not a registry host[:port]: %s", ns, why)
	}
	if ns == "" {
		return bad("it is empty")
	}
	s := strings.ToLower(ns)
	host, port := s, ""
	if strings.HasPrefix(s, "[") || strings.Contains(s, ":") {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return bad("expected host or host:port")
		}
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != p {
			return bad("the port must be a number from 1 to 65535")
		}
		host, port = h, p
	}
	switch {
	case host == "":
		return bad("the host is empty")
	case strings.Contains(host, ":"):
		// Storage and image references have no room for it.
		return bad("IPv6 addresses are not supported; expected a host name or an IPv4 address")
	default:
		for label := range strings.SplitSeq(host, ".") {
			if label == "" || label[0] == '-' || label[len(label)-1] == '-' || strings.Trim(label, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
				return bad("expected a DNS name or an IP address")
			}
		}
	}
	if port == "443" {
		port = ""
	}
	switch host {
	case "docker.io", "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com":
		if port == "" {
			return "docker.io", nil
		}
	}
	out := host
	if port != "" {
		out = host + ":" + port
	}
	// It prefixes the stored names of the registry's repositories
	// (ident.Prefix: the port after "_").
	if _, err := reference.WithName(strings.ReplaceAll(out, ":", "_") + "/x"); err != nil {
		return bad("it cannot prefix a repository name")
	}
	return out, nil
}

// registryOptions are the keys an entry of the registries option takes:
// those of an upstream set.
var registryOptionKeys = []string{"anonymous", "authttl", "backoff", "cas", "dialtimeout", "headertimeout", "idletimeout", "upstreams"}

// parseRegistries reads the registries option, after the top-level
// options: an entry's timeouts, backoff and authttl default to theirs.
func parseRegistries(c *Config, v any) error {
	if v == nil {
		return nil
	}
	m, bad, ok := yamlopt.StringKeyed(v)
	if !ok {
		if bad != nil {
			return fmt.Errorf("downstream: option \"registries\": found a key %s, expected a registry host[:port] such as docker.io", yamlopt.Describe(bad))
		}
		return fmt.Errorf("downstream: option \"registries\": found %s, expected a mapping of registry host[:port] to its options, such as {docker.io: {upstreams: [https://registry-1.docker.io]}}", yamlopt.Describe(v))
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	c.Registries = make(map[string]Registry, len(keys))
	from := map[string]string{} // canonical name -> the key that gave it
	for _, k := range keys {
		name, err := NS(k)
		if err != nil {
			return fmt.Errorf("downstream: option \"registries\": key %v; expected a registry host[:port] such as docker.io or registry.example.com:5000", err)
		}
		if prev, dup := from[name]; dup {
			return fmt.Errorf("downstream: option \"registries\": %q and %q name the same registry %s; expected each registry once", prev, k, name)
		}
		if c.Upstreams.Origin != nil && sameAsOrigin(name, c.Upstreams) {
			return fmt.Errorf("downstream: option \"registries\": %q is the default registry (option \"upstreams\" names its origin %s); expected only other registries here", k, c.Upstreams.Origin.Host)
		}
		from[name] = k
		r, err := parseRegistry(*c, k, m[k])
		if err != nil {
			return err
		}
		r.Name = name
		c.Registries[name] = r
	}
	return nil
}

// sameAsOrigin reports whether the canonical ns name names ups' origin.
func sameAsOrigin(name string, ups Upstreams) bool {
	o, err := NS(ups.Origin.Host)
	if err != nil {
		return false
	}
	if ups.Origin.Scheme == "http" {
		o = strings.TrimSuffix(o, ":80")
		name = strings.TrimSuffix(name, ":80")
	}
	return o == name
}

// parseRegistry reads one entry with the top-level parsers, on a copy of
// the top-level options that keeps their timeouts, backoff and authttl.
func parseRegistry(top Config, key string, v any) (Registry, error) {
	prefix := fmt.Sprintf("downstream: option \"registries.%s\"", key)
	m, _, ok := yamlopt.StringKeyed(v)
	if !ok {
		return Registry{}, fmt.Errorf("%s: found %s, expected a mapping of options (%s) with at least upstreams", prefix, yamlopt.Describe(v), strings.Join(registryOptionKeys, ", "))
	}
	scratch := Config{
		AuthTTL: top.AuthTTL, DialTimeout: top.DialTimeout, HeaderTimeout: top.HeaderTimeout,
		IdleTimeout: top.IdleTimeout, Backoff: top.Backoff,
	}
	known := options()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		lk := strings.ToLower(k)
		if !contains(registryOptionKeys, lk) {
			return Registry{}, fmt.Errorf("%s: unknown option %q; valid options of a registry are %s", prefix, k, strings.Join(registryOptionKeys, ", "))
		}
		if err := known[lk].parse(&scratch, m[k]); err != nil {
			return Registry{}, fmt.Errorf("%s: %s", prefix, strings.TrimPrefix(err.Error(), "downstream: "))
		}
	}
	if scratch.Upstreams.Origin == nil {
		return Registry{}, fmt.Errorf("%s: option \"upstreams\" is missing; expected %s", prefix, upstreamsHelp)
	}
	r := scratch.Default()
	return r, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

const anonymousHelp = "{username: NAME, passwordfile: /absolute/path} (the account used for requests that carry no credentials)"

// parseAnonymous reads the anonymous option. The password is only ever
// read from a file: an inline one would sit in the configuration, which
// is logged, mounted and shared far more than a secret file.
func parseAnonymous(c *Config, v any) error {
	if v == nil {
		return nil
	}
	m, _, ok := yamlopt.StringKeyed(v)
	if !ok {
		return fmt.Errorf("downstream: option \"anonymous\": found %s, expected %s", yamlopt.Describe(v), anonymousHelp)
	}
	a := &Anonymous{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		val := m[k]
		switch strings.ToLower(k) {
		case "username":
			s, ok := val.(string)
			if !ok || strings.TrimSpace(s) == "" || strings.ContainsAny(s, ":\r\n") {
				return fmt.Errorf("downstream: option \"anonymous.username\": found %s, expected a user name (no colon)", describeSafe(val))
			}
			a.Username = s
		case "passwordfile":
			s, ok := val.(string)
			if !ok || !filepath.IsAbs(s) {
				return fmt.Errorf("downstream: option \"anonymous.passwordfile\": found %s, expected an absolute path to a file holding the password or token", yamlopt.Describe(val))
			}
			a.PasswordFile = s
		case "password":
			// Never echo it.
			return errors.New("downstream: option \"anonymous.password\": an inline password is not accepted; expected passwordfile, an absolute path to a file holding it")
		default:
			return fmt.Errorf("downstream: option \"anonymous\": unknown key %q; valid keys are passwordfile, username", k)
		}
	}
	if a.Username == "" {
		return fmt.Errorf("downstream: option \"anonymous.username\" is missing; expected %s", anonymousHelp)
	}
	if a.PasswordFile == "" {
		return fmt.Errorf("downstream: option \"anonymous.passwordfile\" is missing; expected %s", anonymousHelp)
	}
	pw, err := readPasswordFile("anonymous.passwordfile", a.PasswordFile)
	if err != nil {
		return err
	}
	a.password = pw
	c.Anonymous = a
	return nil
}

// describeSafe describes a value that is not a secret but may be mistyped
// as one: strings are named by length only.
func describeSafe(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("a string of %d characters", len(s))
	}
	return yamlopt.Describe(v)
}

func readPasswordFile(key, path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("downstream: option %q: cannot read %q: %v; expected a readable file holding the password or token", key, path, unwrapPathError(err))
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" || strings.ContainsAny(pw, "\r\n") {
		return "", fmt.Errorf("downstream: option %q: %q holds no password, or more than one line; expected the password or token alone", key, path)
	}
	return pw, nil
}
