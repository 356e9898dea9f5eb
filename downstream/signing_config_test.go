package downstream

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/signature"
)

// writePublicKey writes a fresh Ed25519 public key as PKIX PEM.
func writePublicKey(t *testing.T, dir, name string) (string, ed25519.PublicKey) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	data, err := signature.MarshalPublicKeyPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, pub
}

func TestParseOptionsSigning(t *testing.T) {
	dir := t.TempDir()
	keyPath, pub := writePublicKey(t, dir, "origin.pem")
	cfg, err := ParseOptions(map[string]any{
		"upstreams": []any{"https://origin.example.com"},
		"signing": map[any]any{
			"name": "region-asia", "keys": []any{keyPath},
			"keysurl": "https://origin.example.com/api/v0/content_caches/keys", "refresh": "1m",
			"downstreams": []any{"edge-1", "edge-2"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Signing
	if s == nil {
		t.Fatal("Signing is nil")
	}
	id, _ := signature.Thumbprint(pub)
	if s.Name != "region-asia" || s.Refresh != time.Minute || s.KeysURL.String() != "https://origin.example.com/api/v0/content_caches/keys" ||
		!reflect.DeepEqual(s.Downstreams, []string{"edge-1", "edge-2"}) || len(s.PublicKeys) != 1 || s.PublicKeys[0].ID != id {
		t.Fatalf("Signing = %+v", s)
	}
	if !s.Accepts("region-asia") || !s.Accepts("edge-2") || s.Accepts("region-us") {
		t.Fatal("Accepts: wrong answer")
	}

	cfg, err = ParseOptions(map[string]any{"upstreams": []any{"https://o.example.com"}, "signing": map[string]any{"name": "a", "keysurl": "http://o.example.com/k"}})
	if err != nil || cfg.Signing.Refresh != 5*time.Minute || cfg.Signing.MaxExpiry != time.Hour {
		t.Fatalf("default refresh and maxexpiry: %+v, %v", cfg.Signing, err)
	}
	cfg, err = ParseOptions(map[string]any{"upstreams": []any{"https://o.example.com"}, "signing": map[string]any{"name": "a", "keysurl": "http://o.example.com/k", "maxexpiry": "10m"}})
	if err != nil || cfg.Signing.MaxExpiry != 10*time.Minute {
		t.Fatalf("maxexpiry: %+v, %v", cfg.Signing, err)
	}
	cfg, err = ParseOptions(map[string]any{"upstreams": []any{"https://o.example.com"}})
	if err != nil || cfg.Signing != nil {
		t.Fatalf("without signing: %+v, %v", cfg.Signing, err)
	}
}

func TestParseOptionsSigningErrors(t *testing.T) {
	dir := t.TempDir()
	keyPath, _ := writePublicKey(t, dir, "origin.pem")
	same := filepath.Join(dir, "same.pem")
	data, _ := os.ReadFile(keyPath)
	if err := os.WriteFile(same, data, 0o600); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	const nameWant = "a cache name as registered at the origin (lowercase letters, digits, '.', '_' or '-'; at most 63, starting and ending with a letter or digit)"
	const urlWant = "the origin's key endpoint such as https://registry.example.com/api/v0/content_caches/keys"
	ok := map[string]any{"name": "region-asia", "keys": []any{keyPath}}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for k2, v2 := range ok {
			m[k2] = v2
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	cases := []struct {
		name    string
		signing any
		want    string
	}{
		{"not a mapping", "yes", `downstream: option "signing": found string "yes", expected a mapping {name, keys, keysurl, refresh, downstreams, maxexpiry}`},
		{"unknown key", with("key", "x"), `downstream: option "signing": unknown key "key"; valid keys are downstreams, keys, keysurl, maxexpiry, name, refresh`},
		{"no name", with("name", nil), `downstream: option "signing.name" is missing; expected ` + nameWant},
		{"bad name", with("name", "Region Asia"), `downstream: option "signing.name": found string "Region Asia", expected ` + nameWant},
		{"name not a string", with("name", 5), `downstream: option "signing.name": found integer 5, expected ` + nameWant},
		{"no key source", map[string]any{"name": "a"}, `downstream: option "signing": neither "keys" nor "keysurl" is set; expected at least one source of the origin's public keys`},
		{"keys not a list", with("keys", keyPath), `downstream: option "signing.keys": found string "` + keyPath + `", expected a list of absolute paths to PEM public keys (PKIX, Ed25519)`},
		{"relative key", with("keys", []any{"origin.pem"}), `downstream: option "signing.keys": found an item string "origin.pem", expected an absolute path to a PEM public key (PKIX, Ed25519)`},
		{"missing key", with("keys", []any{missing}), `downstream: option "signing.keys": cannot read "` + missing + `": no such file or directory; expected a readable PEM public key (PKIX, Ed25519)`},
		{"not PEM", with("keys", []any{text}), `downstream: option "signing.keys": "` + text + `": no PEM block found, expected "PUBLIC KEY"`},
		{"same key twice", with("keys", []any{keyPath, same}), `downstream: option "signing.keys": "` + same + `" holds the same key as another file; expected each key once`},
		{"keysurl not a URL", with("keysurl", "origin/keys"), `downstream: option "signing.keysurl": found string "origin/keys", expected ` + urlWant},
		{"keysurl with user", with("keysurl", "https://u:secret@o.example.com/keys"), `downstream: option "signing.keysurl": "https://u:xxxxx@o.example.com/keys" has user information; expected ` + urlWant + ` (the endpoint needs no credentials)`},
		{"keysurl not a string", with("keysurl", 1), `downstream: option "signing.keysurl": found integer 1, expected ` + urlWant},
		{"bad refresh", with("refresh", "soon"), `downstream: option "signing.refresh": found string "soon", expected a positive duration such as 24h (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"zero refresh", with("refresh", 0), `downstream: option "signing.refresh": found integer 0, expected a positive duration such as 24h (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"bad maxexpiry", with("maxexpiry", "forever"), `downstream: option "signing.maxexpiry": found string "forever", expected a positive duration such as 24h (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"zero maxexpiry", with("maxexpiry", "0s"), `downstream: option "signing.maxexpiry": found string "0s", expected a positive duration such as 24h (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"downstreams not a list", with("downstreams", "edge"), `downstream: option "signing.downstreams": found string "edge", expected a list of cache names`},
		{"bad downstream", with("downstreams", []any{"Edge"}), `downstream: option "signing.downstreams": found string "Edge", expected ` + nameWant},
		{"downstream twice", with("downstreams", []any{"edge", "edge"}), `downstream: option "signing.downstreams": "edge" is listed twice; expected each cache once`},
		{"downstream is self", with("downstreams", []any{"region-asia"}), `downstream: option "signing.downstreams": "region-asia" is this cache's own name; expected the names of the caches chained behind this one`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseOptions(map[string]any{"upstreams": []any{"https://origin.example.com"}, "signing": tc.signing})
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error\n got: %v\nwant: %s", err, tc.want)
			}
		})
	}
}
