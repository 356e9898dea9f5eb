package downstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/config"
)

func TestParseOptionsRedis(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	pw := filepath.Join(dir, "redis-password")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := registryYAML("true", "upstreams: [https://origin.example.com]\nredis:\n  addr: redis:6379\n  passwordfile: "+pw+
		"\n  db: 2\n  keyprefix: cc1/\n  tls: {ca: "+ca+"}\n  leasettl: 3s\n  pullsflush: 10s\nadvertise: http://10.0.0.5:5000")
	c, err := ParseOptions(middlewareOptions(parseYAML(t, doc)))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redis
	if r == nil || r.Addr != "redis:6379" || r.PasswordFile != pw || r.Password != "s3cret" || r.DB != 2 || r.KeyPrefix != "cc1/" ||
		r.CA != ca || len(r.CACerts) != 1 || r.LeaseTTL != 3*time.Second || r.PullsFlush != 10*time.Second {
		t.Fatalf("redis = %+v", r)
	}
	if c.Advertise == nil || c.Advertise.String() != "http://10.0.0.5:5000" {
		t.Fatalf("advertise = %v", c.Advertise)
	}

	// Defaults: only addr.
	c, err = ParseOptions(origin(map[string]any{"redis": map[any]any{"addr": "127.0.0.1:6379"}}))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Redis; r.KeyPrefix != "content-cache/" || r.DB != 0 || r.Password != "" || r.CA != "" ||
		r.LeaseTTL != config.DefaultLeaseTTL || r.PullsFlush != config.DefaultPullsFlush {
		t.Fatalf("defaults = %+v", r)
	}
	// No redis block: a single node.
	if c, err := ParseOptions(origin(nil)); err != nil || c.Redis != nil || c.Advertise != nil {
		t.Fatalf("no redis block: %+v %v", c.Redis, err)
	}
}

func TestParseOptionsRedisErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	redis := func(m map[any]any) map[string]any { return origin(map[string]any{"redis": m}) }
	for _, tc := range []struct {
		name string
		raw  map[string]any
		want string
	}{
		{"not a mapping", origin(map[string]any{"redis": "redis:6379"}),
			`downstream: option "redis": found string "redis:6379", expected a mapping {addr, passwordfile, db, keyprefix, tls: {ca}, leasettl, pullsflush}`},
		{"no addr", redis(map[any]any{"db": 1}),
			`downstream: option "redis.addr" is missing; expected host:port of the Redis server such as redis:6379`},
		{"addr without port", redis(map[any]any{"addr": "redis"}),
			`downstream: option "redis.addr": found string "redis", expected host:port of the Redis server such as redis:6379`},
		{"addr with a bad port", redis(map[any]any{"addr": "redis:0"}),
			`downstream: option "redis.addr": found string "redis:0", expected host:port of the Redis server such as redis:6379`},
		{"unknown key", redis(map[any]any{"addr": "redis:6379", "password": "hunter2"}),
			`downstream: option "redis": unknown key "password"; valid keys are addr, db, keyprefix, leasettl, passwordfile, pullsflush, tls`},
		{"password inline", redis(map[any]any{"addr": "redis:6379", "passwordfile": "hunter2"}),
			`downstream: option "redis.passwordfile": found a string that is not an absolute path, expected an absolute path to a file holding the Redis password (never the password itself)`},
		{"password file missing", redis(map[any]any{"addr": "redis:6379", "passwordfile": missing}),
			`downstream: option "redis.passwordfile": cannot read "` + missing + `": no such file or directory; expected an absolute path to a file holding the Redis password (never the password itself)`},
		{"password file empty", redis(map[any]any{"addr": "redis:6379", "passwordfile": empty}),
			`downstream: option "redis.passwordfile": "` + empty + `" is empty; expected an absolute path to a file holding the Redis password (never the password itself)`},
		{"negative db", redis(map[any]any{"addr": "redis:6379", "db": -1}),
			`downstream: option "redis.db": found integer -1, expected a database number >= 0 such as 0`},
		{"db a string", redis(map[any]any{"addr": "redis:6379", "db": "zero"}),
			`downstream: option "redis.db": found string "zero", expected a database number >= 0 such as 0`},
		{"empty keyprefix", redis(map[any]any{"addr": "redis:6379", "keyprefix": ""}),
			`downstream: option "redis.keyprefix": found string "", expected a non-empty string without spaces such as "content-cache/"`},
		{"tls not a mapping", redis(map[any]any{"addr": "redis:6379", "tls": true}),
			`downstream: option "redis.tls": found boolean true, expected a mapping {ca: /path/to/ca.pem}`},
		{"tls ca relative", redis(map[any]any{"addr": "redis:6379", "tls": map[any]any{"ca": "ca.pem"}}),
			`downstream: option "redis.tls.ca": found string "ca.pem", expected an absolute path to a PEM CA certificate`},
		{"tls ca missing", redis(map[any]any{"addr": "redis:6379", "tls": map[any]any{"ca": missing}}),
			`downstream: option "redis.tls.ca": cannot read "` + missing + `": no such file or directory; expected a readable PEM CA certificate`},
		{"tls ca not PEM", redis(map[any]any{"addr": "redis:6379", "tls": map[any]any{"ca": empty}}),
			`downstream: option "redis.tls.ca": "` + empty + `" holds no PEM certificate; expected at least one -----BEGIN CERTIFICATE----- block`},
		{"leasettl too short", redis(map[any]any{"addr": "redis:6379", "leasettl": "10ms"}),
			`downstream: option "redis.leasettl": found string "10ms", expected at least 100ms (a lease is renewed every third of it)`},
		{"pullsflush zero", redis(map[any]any{"addr": "redis:6379", "pullsflush": "0"}),
			`downstream: option "redis.pullsflush": found string "0", expected ` + wantPositive},
		{"advertise with a path", origin(map[string]any{"advertise": "http://10.0.0.5:5000/v2"}),
			`downstream: option "advertise": found string "http://10.0.0.5:5000/v2", expected the URL other replicas reach this one at, such as http://10.0.0.5:5000 (scheme, host and port only)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseOptions(tc.raw)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error\n got %v\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error echoes a password: %v", err)
			}
		})
	}
}

func TestCheckConfigurationRedisNeedsSecret(t *testing.T) {
	doc := registryYAML("true", "upstreams: [https://origin.example.com]\nredis: {addr: 127.0.0.1:6379}")
	want := `downstream: option "redis" (127.0.0.1:6379) needs http.secret, but it is not set; expected the same http.secret on every replica (it also keys the replicas' internal endpoint)`
	if err := CheckConfiguration(parseYAML(t, doc)); err == nil || err.Error() != want {
		t.Fatalf("error\n got %v\nwant %s", err, want)
	}
	withSecret := strings.Replace(doc, "http:\n", "http:\n  secret: same-on-every-replica\n", 1)
	if err := CheckConfiguration(parseYAML(t, withSecret)); err != nil {
		t.Fatalf("with http.secret: %v", err)
	}
}
