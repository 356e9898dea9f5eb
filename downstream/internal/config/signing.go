package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// DefaultKeysRefresh is how often the origin's key endpoint is read again:
// a key the origin publishes before signing with it reaches the cache
// within this time.
const DefaultKeysRefresh = 5 * time.Minute

// DefaultMaxExpiry bounds how far in the future a signature's expiry may
// lie: the origin signs for minutes (its signaturettl, 5m by default), so
// a signature valid for longer was issued by a misconfigured origin or
// with a stolen key, and a leaked URL must not stay good for years.
const DefaultMaxExpiry = time.Hour

// Signing is the `signing` option: this cache accepts the origin's signed
// blob URLs (transparent caches). Nil in Config: signed URLs are refused.
type Signing struct {
	// Name is this cache's name as registered at the origin: the name a
	// signature must carry.
	Name string
	// Keys are PKIX PEM files of the origin's public keys.
	Keys []string
	// PublicKeys are the keys of Keys, read once by Parse, with their
	// default ids (RFC 7638 thumbprints, as the origin uses).
	PublicKeys []signature.PublicKey
	// KeysURL is the origin's key endpoint (a JWKS document), read at
	// start and every Refresh.
	KeysURL *url.URL
	Refresh time.Duration
	// Downstreams are the caches chained behind this one whose signatures
	// it accepts, forwarded by them on a miss.
	Downstreams []string
	// MaxExpiry refuses a signature expiring further than this from now
	// (maxexpiry, default DefaultMaxExpiry); it must be at least the
	// origin's signaturettl.
	MaxExpiry time.Duration
}

// Accepts reports whether a signature naming cache may be spent here: this
// cache's own, or one of its downstreams'.
func (s *Signing) Accepts(cache string) bool {
	if cache == s.Name {
		return true
	}
	for _, d := range s.Downstreams {
		if d == cache {
			return true
		}
	}
	return false
}

const (
	signingHelp  = "a mapping {name, keys, keysurl, refresh, downstreams, maxexpiry}"
	signingKeys  = "downstreams, keys, keysurl, maxexpiry, name, refresh"
	cacheNameFmt = "a cache name as registered at the origin (lowercase letters, digits, '.', '_' or '-'; at most 63, starting and ending with a letter or digit)"
)

func parseSigning(c *Config, v any) error {
	obj, bad, ok := yamlopt.StringKeyed(v)
	if !ok {
		if bad != nil {
			return fmt.Errorf("downstream: option \"signing\": found a key %s, expected one of %s", yamlopt.Describe(bad), signingKeys)
		}
		return fmt.Errorf("downstream: option \"signing\": found %s, expected %s", yamlopt.Describe(v), signingHelp)
	}
	s := &Signing{Refresh: DefaultKeysRefresh, MaxExpiry: DefaultMaxExpiry}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same mistake always gives the same message
	for _, k := range keys {
		val := obj[k]
		var err error
		switch strings.ToLower(k) {
		case "name":
			s.Name, err = signingName("signing.name", val)
		case "keys":
			err = parseSigningKeys(s, val)
		case "keysurl":
			s.KeysURL, err = parseKeysURL(val)
		case "refresh":
			s.Refresh, err = parseDuration("signing.refresh", val, false)
		case "downstreams":
			err = parseDownstreams(s, val)
		case "maxexpiry":
			s.MaxExpiry, err = parseDuration("signing.maxexpiry", val, false)
		default:
			err = fmt.Errorf("downstream: option \"signing\": unknown key %q; valid keys are %s", k, signingKeys)
		}
		if err != nil {
			return err
		}
	}
	if s.Name == "" {
		return fmt.Errorf("downstream: option \"signing.name\" is missing; expected %s", cacheNameFmt)
	}
	if len(s.Keys) == 0 && s.KeysURL == nil {
		return fmt.Errorf("downstream: option \"signing\": neither \"keys\" nor \"keysurl\" is set; expected at least one source of the origin's public keys")
	}
	for _, d := range s.Downstreams {
		if d == s.Name {
			return fmt.Errorf("downstream: option \"signing.downstreams\": %q is this cache's own name; expected the names of the caches chained behind this one", d)
		}
	}
	c.Signing = s
	return nil
}

func signingName(key string, v any) (string, error) {
	s, ok := v.(string)
	if !ok || !validCacheName(s) {
		return "", fmt.Errorf("downstream: option %q: found %s, expected %s", key, yamlopt.Describe(v), cacheNameFmt)
	}
	return s, nil
}

// validCacheName is the origin's rule for cache names (DNS-label-like).
func validCacheName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, r := range s {
		edge := i == 0 || i == len(s)-1
		letter := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')
		if !letter && (edge || (r != '.' && r != '_' && r != '-')) {
			return false
		}
	}
	return true
}

func parseSigningKeys(s *Signing, v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("downstream: option \"signing.keys\": found %s, expected a list of absolute paths to PEM public keys (PKIX, Ed25519)", yamlopt.Describe(v))
	}
	for _, item := range list {
		p, ok := item.(string)
		if !ok || !filepath.IsAbs(p) {
			return fmt.Errorf("downstream: option \"signing.keys\": found an item %s, expected an absolute path to a PEM public key (PKIX, Ed25519)", yamlopt.Describe(item))
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("downstream: option \"signing.keys\": cannot read %q: %v; expected a readable PEM public key (PKIX, Ed25519)", p, unwrapPathError(err))
		}
		pub, err := signature.ParsePublicKeyPEM(data)
		if err != nil {
			return fmt.Errorf("downstream: option \"signing.keys\": %q: %v", p, strings.TrimPrefix(err.Error(), "signature: "))
		}
		id, err := signature.Thumbprint(pub)
		if err != nil {
			return fmt.Errorf("downstream: option \"signing.keys\": %q: %v", p, err)
		}
		for _, k := range s.PublicKeys {
			if k.ID == id {
				return fmt.Errorf("downstream: option \"signing.keys\": %q holds the same key as another file; expected each key once", p)
			}
		}
		s.Keys = append(s.Keys, p)
		s.PublicKeys = append(s.PublicKeys, signature.PublicKey{ID: id, Key: pub})
	}
	return nil
}

// parseKeysURL accepts the origin's key endpoint, e.g.
// https://registry.example.com/api/v0/content_caches/keys.
func parseKeysURL(v any) (*url.URL, error) {
	const want = "the origin's key endpoint such as https://registry.example.com/api/v0/content_caches/keys"
	raw, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("downstream: option \"signing.keysurl\": found %s, expected %s", yamlopt.Describe(v), want)
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err == nil && u.User != nil {
		return nil, fmt.Errorf("downstream: option \"signing.keysurl\": %q has user information; expected %s (the endpoint needs no credentials)", u.Redacted(), want)
	}
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Fragment != "" {
		return nil, fmt.Errorf("downstream: option \"signing.keysurl\": found %s, expected %s", yamlopt.Describe(v), want)
	}
	return u, nil
}

func parseDownstreams(s *Signing, v any) error {
	list, ok := v.([]any)
	if !ok {
		return fmt.Errorf("downstream: option \"signing.downstreams\": found %s, expected a list of cache names", yamlopt.Describe(v))
	}
	seen := map[string]bool{}
	for _, item := range list {
		name, err := signingName("signing.downstreams", item)
		if err != nil {
			return err
		}
		if seen[name] {
			return fmt.Errorf("downstream: option \"signing.downstreams\": %q is listed twice; expected each cache once", name)
		}
		seen[name] = true
		s.Downstreams = append(s.Downstreams, name)
	}
	return nil
}
