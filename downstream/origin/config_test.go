package origin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"

	"github.com/content-cache/content-cache/downstream/internal/signature"
)

func TestParseOptionsDefaults(t *testing.T) {
	key := writeKey(t, t.TempDir(), 1)
	c, err := ParseOptions(map[string]any{"signingkey": key})
	if err != nil {
		t.Fatal(err)
	}
	if c.SignatureTTL != DefaultSignatureTTL || c.ProbeInterval != DefaultProbeInterval || c.ProbeTimeout != DefaultProbeTimeout {
		t.Fatalf("defaults %v %v %v", c.SignatureTTL, c.ProbeInterval, c.ProbeTimeout)
	}
	want, _ := signature.Thumbprint(c.Signer.Public())
	if c.Signer.KeyID != want || len(c.PublishedKeys) != 1 || c.PublishedKeys[0].ID != want {
		t.Fatalf("key id %q (published %v), want the thumbprint %q", c.Signer.KeyID, c.PublishedKeys, want)
	}
}

func TestParseOptionsFull(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir, 1)
	oldPub, _ := signature.MarshalPublicKeyPEM(signature.Signer{PrivateKey: seeded(2)}.Public())
	oldPath := filepath.Join(dir, "old.pub.pem")
	if err := os.WriteFile(oldPath, oldPub, 0o600); err != nil {
		t.Fatal(err)
	}
	yml := `
version: 0.1
storage:
  inmemory: {}
middleware:
  registry:
    - name: contentcaches
      options:
        signingkey: ` + key + `
        keyid: 2026-12
        publishkeys: [` + oldPath + `]
        signaturettl: 2m
        probeinterval: 30s
        probetimeout: 3s
        admins: [admin, ops]
        caches:
          - name: region-asia
            host: https://Cache-Asia.example.com:443
          - name: lan
            host: http://10.0.0.5:5000/
        users:
          alice: region-asia
        networks:
          - cidr: 10.0.0.0/8
            cache: lan
          - cidr: fd00::/8
            cache: lan
`
	cfg, err := configuration.Parse(strings.NewReader(yml))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseOptions(cfg.Middleware["registry"][0].Options)
	if err != nil {
		t.Fatal(err)
	}
	if c.Signer.KeyID != "2026-12" || len(c.PublishedKeys) != 2 || c.PublishedKeys[1].ID == "" {
		t.Errorf("keys: %q, %v", c.Signer.KeyID, c.PublishedKeys)
	}
	if c.SignatureTTL != 2*time.Minute || c.ProbeInterval != 30*time.Second || c.ProbeTimeout != 3*time.Second {
		t.Errorf("durations %v %v %v", c.SignatureTTL, c.ProbeInterval, c.ProbeTimeout)
	}
	if len(c.Admins) != 2 || c.Users["alice"] != "region-asia" {
		t.Errorf("admins %v users %v", c.Admins, c.Users)
	}
	if len(c.Caches) != 2 || c.Caches[0].Host != "https://cache-asia.example.com:443" || c.Caches[1].Host != "http://10.0.0.5:5000" {
		t.Errorf("caches %v", c.Caches)
	}
	if len(c.Networks) != 2 || c.Networks[1].Prefix.String() != "fd00::/8" {
		t.Errorf("networks %v", c.Networks)
	}
	if err := CheckConfiguration(cfg); err != nil {
		t.Errorf("CheckConfiguration: %v", err)
	}
}

// TestParseOptionsErrors pins every message: option, value found, what is
// expected, on one line.
func TestParseOptionsErrors(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir, 1)
	notKey := filepath.Join(dir, "not-a-key.pem")
	if err := os.WriteFile(notKey, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	lan := []any{map[any]any{"name": "lan", "host": "http://lan:5000"}}
	cases := []struct {
		name string
		opts map[string]any
		want string
	}{
		{"no signing key", map[string]any{}, `contentcaches: option "signingkey" is missing; expected the path of a PEM Ed25519 private key (PKCS#8), e.g. from ` + "`openssl genpkey -algorithm ed25519`"},
		{"signing key not a string", map[string]any{"signingkey": 5}, `contentcaches: option "signingkey": found integer 5, expected the path of a PEM Ed25519 private key (PKCS#8)`},
		{"signing key missing file", map[string]any{"signingkey": missing}, `contentcaches: option "signingkey": open ` + missing + `: no such file or directory; expected a readable PEM Ed25519 private key (PKCS#8)`},
		{"signing key not PEM", map[string]any{"signingkey": notKey}, `contentcaches: option "signingkey": ` + notKey + `: signature: no PEM block found, expected "PRIVATE KEY"`},
		{"prefetch not a boolean", map[string]any{"signingkey": key, "prefetch": "yes"}, `contentcaches: option "prefetch": found string "yes", expected true or false`},
		{"unknown option", map[string]any{"signingkey": key, "blobttl": "1h"}, `contentcaches: unknown option "blobttl"; valid options are admins, caches, cas, keyid, networks, prefetch, probeinterval, probetimeout, publishkeys, signaturettl, signingkey, users`},
		{"bad key id", map[string]any{"signingkey": key, "keyid": "a b"}, `contentcaches: option "keyid": found string "a b", expected a key id of 1 to 64 letters, digits, '.', '_' or '-'`},
		{"publish key missing", map[string]any{"signingkey": key, "publishkeys": []any{missing}}, `contentcaches: option "publishkeys": open ` + missing + `: no such file or directory; expected a readable PEM Ed25519 public key (PKIX)`},
		{"publish keys not a list", map[string]any{"signingkey": key, "publishkeys": missing}, `contentcaches: option "publishkeys": found string "` + missing + `", expected a list of paths of PEM Ed25519 public keys (PKIX)`},
		{"bad ttl", map[string]any{"signingkey": key, "signaturettl": "5x"}, `contentcaches: option "signaturettl": found string "5x", expected a positive duration such as 5m (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"zero ttl", map[string]any{"signingkey": key, "signaturettl": 0}, `contentcaches: option "signaturettl": found integer 0, expected a positive duration such as 5m (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"negative probe interval", map[string]any{"signingkey": key, "probeinterval": "-1s"}, `contentcaches: option "probeinterval": found string "-1s", expected a positive duration such as 5m (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"admins not a list", map[string]any{"signingkey": key, "admins": "admin"}, `contentcaches: option "admins": found string "admin", expected a list of user names`},
		{"cas not a list", map[string]any{"signingkey": key, "cas": "/ca.pem"}, `contentcaches: option "cas": found string "/ca.pem", expected a list of paths of PEM CA certificates`},
		{"ca missing", map[string]any{"signingkey": key, "cas": []any{missing}}, `contentcaches: option "cas": open ` + missing + `: no such file or directory; expected a readable PEM CA certificate`},
		{"ca not PEM", map[string]any{"signingkey": key, "cas": []any{notKey}}, `contentcaches: option "cas": ` + notKey + ` holds no PEM certificate; expected a PEM CA certificate`},
		{"caches not a list", map[string]any{"signingkey": key, "caches": "lan"}, `contentcaches: option "caches": found string "lan", expected a list of {name: NAME, host: https://host[:port]}`},
		{"cache not a mapping", map[string]any{"signingkey": key, "caches": []any{"lan"}}, `contentcaches: option "caches": item 1 is string "lan", expected {name: NAME, host: URL}`},
		{"cache unknown key", map[string]any{"signingkey": key, "caches": []any{map[any]any{"name": "lan", "host": "http://x", "ttl": 1}}}, `contentcaches: option "caches": item 1 has unknown key "ttl"; valid keys are host, name`},
		{"cache bad name", map[string]any{"signingkey": key, "caches": []any{map[any]any{"name": "-lan", "host": "http://x"}}}, `contentcaches: option "caches": item 1: name "-lan" is not valid; expected a name of lowercase letters, digits, '.', '_' or '-' (at most 63, starting and ending with a letter or digit), not "keys"`},
		{"cache bad host", map[string]any{"signingkey": key, "caches": []any{map[any]any{"name": "lan", "host": "lan:5000"}}}, `contentcaches: option "caches": item 1: host "lan:5000" is not valid; expected http:// or https:// followed by host[:port] and nothing else`},
		{"cache twice", map[string]any{"signingkey": key, "caches": append(append([]any{}, lan...), lan...)}, `contentcaches: option "caches": item 2: cache "lan" is listed twice; expected each name once`},
		{"user of unknown cache", map[string]any{"signingkey": key, "caches": lan, "users": map[any]any{"alice": "asia"}}, `contentcaches: option "users": user "alice" is assigned to cache "asia", which option "caches" does not list; expected one of "lan"`},
		{"user of no cache", map[string]any{"signingkey": key, "users": map[any]any{"alice": "asia"}}, `contentcaches: option "users": user "alice" is assigned to cache "asia", which option "caches" does not list; expected one of a cache listed in option "caches" (none are)`},
		{"user not a string", map[string]any{"signingkey": key, "caches": lan, "users": map[any]any{"alice": 1}}, `contentcaches: option "users": user "alice" is assigned integer 1, expected a cache name`},
		{"users a list", map[string]any{"signingkey": key, "users": []any{"alice"}}, `contentcaches: option "users": found list [alice], expected a mapping of user name to cache name`},
		{"network bad cidr", map[string]any{"signingkey": key, "caches": lan, "networks": []any{map[any]any{"cidr": "10.0.0.0", "cache": "lan"}}}, `contentcaches: option "networks": item 1: cidr string "10.0.0.0" is not valid; expected a network such as 10.20.0.0/16 or fd00::/8`},
		{"network host bits", map[string]any{"signingkey": key, "caches": lan, "networks": []any{map[any]any{"cidr": "10.1.2.3/8", "cache": "lan"}}}, `contentcaches: option "networks": item 1: cidr "10.1.2.3/8" has host bits set; expected 10.0.0.0/8`},
		{"network no cache", map[string]any{"signingkey": key, "caches": lan, "networks": []any{map[any]any{"cidr": "10.0.0.0/8"}}}, `contentcaches: option "networks": item 1: cache nothing, expected a cache name`},
		{"network unknown cache", map[string]any{"signingkey": key, "caches": lan, "networks": []any{map[any]any{"cidr": "10.0.0.0/8", "cache": "asia"}}}, `contentcaches: option "networks": item 1 (10.0.0.0/8) names cache "asia", which option "caches" does not list; expected one of "lan"`},
		{"network unknown key", map[string]any{"signingkey": key, "networks": []any{map[any]any{"cidr": "10.0.0.0/8", "to": "lan"}}}, `contentcaches: option "networks": item 1 has unknown key "to"; valid keys are cache, cidr`},
	}
	for _, tc := range cases {
		_, err := ParseOptions(tc.opts)
		if err == nil {
			t.Errorf("%s: no error, want %s", tc.name, tc.want)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%s:\n got  %s\n want %s", tc.name, err, tc.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: the message has several lines", tc.name)
		}
	}
}

func TestCheckConfigurationTwice(t *testing.T) {
	key := writeKey(t, t.TempDir(), 1)
	cfg := &configuration.Configuration{Middleware: map[string][]configuration.Middleware{"registry": {
		{Name: Name, Options: map[string]any{"signingkey": key}},
		{Name: "downstream", Options: map[string]any{}},
	}}}
	want := `contentcaches: middleware.registry lists contentcaches more than once or together with downstream; expected an origin (contentcaches) or a cache (downstream), once`
	if err := CheckConfiguration(cfg); err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	if err := CheckConfiguration(&configuration.Configuration{}); err != nil {
		t.Fatalf("not configured: %v", err)
	}
}
