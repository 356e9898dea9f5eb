package config

import (
	"crypto/x509"
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

// Defaults of the redis block, documented in docs/replicas.md and the
// README's options table.
const (
	// DefaultRedisKeyPrefix starts every key the cache keeps in Redis, so
	// that one Redis can serve other programs (or several clusters, each
	// with its own prefix).
	DefaultRedisKeyPrefix = "content-cache/"
	// DefaultLeaseTTL is how long a fill or sweep lease lasts without a
	// renewal: the bound on how long a dead or stalled replica holds up a
	// blob before another replica takes it over. Renewed every third of it.
	DefaultLeaseTTL = 10 * time.Second
	// DefaultPullsFlush is how often pull times kept in Redis are written
	// to storage: what a restart of every replica, or the loss of Redis,
	// may lose of them.
	DefaultPullsFlush = time.Minute
)

// Redis is the `redis` option: replicas sharing one storage coordinate
// through this Redis (fill leases, the in-use registry, pull records). Nil
// in Config: a single node, everything in memory.
type Redis struct {
	// Addr is host:port of the Redis server.
	Addr string
	// PasswordFile holds the password (trailing newline trimmed): never
	// inline in the configuration. Password is its content, read by Parse.
	PasswordFile string
	Password     string
	DB           int
	KeyPrefix    string
	// CA is a PEM file of the CA of the server's TLS certificate: set, the
	// connection uses TLS. CACerts are its certificates, read by Parse.
	CA      string
	CACerts []*x509.Certificate
	// LeaseTTL is the lifetime of a lease between renewals.
	LeaseTTL time.Duration
	// PullsFlush is the batch interval of pull records to storage.
	PullsFlush time.Duration
}

const (
	redisHelp = "a mapping {addr, passwordfile, db, keyprefix, tls: {ca}, leasettl, pullsflush}"
	redisKeys = "addr, db, keyprefix, leasettl, passwordfile, pullsflush, tls"
)

func parseRedis(c *Config, v any) error {
	obj, bad, ok := yamlopt.StringKeyed(v)
	if !ok {
		if bad != nil {
			return fmt.Errorf("downstream: option \"redis\": found a key %s, expected one of %s", yamlopt.Describe(bad), redisKeys)
		}
		return fmt.Errorf("downstream: option \"redis\": found %s, expected %s", yamlopt.Describe(v), redisHelp)
	}
	r := &Redis{KeyPrefix: DefaultRedisKeyPrefix, LeaseTTL: DefaultLeaseTTL, PullsFlush: DefaultPullsFlush}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same mistake always gives the same message
	for _, k := range keys {
		val := obj[k]
		var err error
		switch strings.ToLower(k) {
		case "addr":
			r.Addr, err = redisAddr(val)
		case "passwordfile":
			r.PasswordFile, r.Password, err = redisPassword(val)
		case "db":
			r.DB, err = redisDB(val)
		case "keyprefix":
			s, ok := val.(string)
			if !ok || strings.TrimSpace(s) == "" || strings.ContainsAny(s, " \t\r\n") {
				err = fmt.Errorf("downstream: option \"redis.keyprefix\": found %s, expected a non-empty string without spaces such as %q", yamlopt.Describe(val), DefaultRedisKeyPrefix)
			}
			r.KeyPrefix = s
		case "tls":
			r.CA, r.CACerts, err = redisTLS(val)
		case "leasettl":
			r.LeaseTTL, err = parseDuration("redis.leasettl", val, false)
			if err == nil && r.LeaseTTL < 100*time.Millisecond {
				err = fmt.Errorf("downstream: option \"redis.leasettl\": found %s, expected at least 100ms (a lease is renewed every third of it)", yamlopt.Describe(val))
			}
		case "pullsflush":
			r.PullsFlush, err = parseDuration("redis.pullsflush", val, false)
		default:
			err = fmt.Errorf("downstream: option \"redis\": unknown key %q; valid keys are %s", k, redisKeys)
		}
		if err != nil {
			return err
		}
	}
	if r.Addr == "" {
		return fmt.Errorf("downstream: option \"redis.addr\" is missing; expected host:port of the Redis server such as redis:6379")
	}
	c.Redis = r
	return nil
}

func redisAddr(v any) (string, error) {
	const want = "host:port of the Redis server such as redis:6379"
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("downstream: option \"redis.addr\": found %s, expected %s", yamlopt.Describe(v), want)
	}
	host, port, err := net.SplitHostPort(strings.TrimSpace(s))
	n, perr := strconv.Atoi(port)
	if err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("downstream: option \"redis.addr\": found %s, expected %s", yamlopt.Describe(v), want)
	}
	return net.JoinHostPort(host, port), nil
}

func redisPassword(v any) (path, password string, err error) {
	const want = "an absolute path to a file holding the Redis password (never the password itself)"
	p, ok := v.(string)
	if !ok || !filepath.IsAbs(p) {
		// The value is not echoed: it may be a password put in the wrong place.
		return "", "", fmt.Errorf("downstream: option \"redis.passwordfile\": found a %s that is not an absolute path, expected %s", yamlopt.TypeName(v), want)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return "", "", fmt.Errorf("downstream: option \"redis.passwordfile\": cannot read %q: %v; expected %s", p, unwrapPathError(err), want)
	}
	pw := strings.TrimRight(string(data), "\r\n")
	if pw == "" {
		return "", "", fmt.Errorf("downstream: option \"redis.passwordfile\": %q is empty; expected %s", p, want)
	}
	return p, pw, nil
}

func redisDB(v any) (int, error) {
	n, ok := v.(int)
	if !ok || n < 0 || n > 1<<20 {
		return 0, fmt.Errorf("downstream: option \"redis.db\": found %s, expected a database number >= 0 such as 0", yamlopt.Describe(v))
	}
	return n, nil
}

func redisTLS(v any) (string, []*x509.Certificate, error) {
	obj, _, ok := yamlopt.StringKeyed(v)
	if !ok {
		return "", nil, fmt.Errorf("downstream: option \"redis.tls\": found %s, expected a mapping {ca: /path/to/ca.pem}", yamlopt.Describe(v))
	}
	var ca string
	for k, val := range obj {
		if strings.ToLower(k) != "ca" {
			return "", nil, fmt.Errorf("downstream: option \"redis.tls\": unknown key %q; valid keys are ca", k)
		}
		s, ok := val.(string)
		if !ok || !filepath.IsAbs(s) {
			return "", nil, fmt.Errorf("downstream: option \"redis.tls.ca\": found %s, expected an absolute path to a PEM CA certificate", yamlopt.Describe(val))
		}
		ca = s
	}
	if ca == "" {
		return "", nil, fmt.Errorf("downstream: option \"redis.tls.ca\" is missing; expected an absolute path to a PEM CA certificate")
	}
	certs, err := readPEM(ca)
	if err != nil {
		return "", nil, fmt.Errorf("%s", strings.Replace(err.Error(), `option "cas"`, `option "redis.tls.ca"`, 1))
	}
	return ca, certs, nil
}

const advertiseHelp = "the URL other replicas reach this one at, such as http://10.0.0.5:5000 (scheme, host and port only)"

// parseAdvertise reads the `advertise` option: how the other replicas reach
// this one's internal endpoint. Default: see Config.Advertise.
func parseAdvertise(c *Config, v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("downstream: option \"advertise\": found %s, expected %s", yamlopt.Describe(v), advertiseHelp)
	}
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("downstream: option \"advertise\": found %s, expected %s", yamlopt.Describe(v), advertiseHelp)
	}
	c.Advertise = &url.URL{Scheme: u.Scheme, Host: u.Host}
	return nil
}
