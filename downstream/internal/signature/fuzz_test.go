package signature

import (
	"net/url"
	"testing"
)

// FuzzParseQuery feeds arbitrary query strings to the parser Verify uses:
// it must never panic, and whatever it accepts must be exactly what a
// signer would write for the same claims. The seeds run in `go test`.
func FuzzParseQuery(f *testing.F) {
	valid := testSigner().Sign(testClaims()).Encode()
	f.Add(valid)
	f.Add(valid + "&cc-cache=region-us")
	f.Add("cc-method=GET&cc-repo=a&cc-digest=d&cc-exp=1&cc-cache=c&cc-kid=k&cc-sig=" + string(make([]byte, 86)))
	f.Add("cc-exp=-1")
	f.Add("cc-exp=99999999999999999999")
	f.Add("%zz=1&;")
	f.Add("")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		s, err := parseQuery(q)
		if err != nil {
			return
		}
		again := Signer{KeyID: s.claims.KeyID, PrivateKey: seededKey(9)}.Sign(s.claims)
		for _, p := range []string{ParamMethod, ParamRepo, ParamDigest, ParamExpiry, ParamCache, ParamKeyID} {
			if again.Get(p) != q.Get(p) {
				t.Fatalf("parameter %s: parsed %q, a signer writes %q", p, q.Get(p), again.Get(p))
			}
		}
		// And a verifier refuses it without panicking (no key k matches).
		v, _ := NewVerifier(PublicKey{ID: s.claims.KeyID, Key: testSigner().Public()})
		if _, err := v.Verify(s.claims.Method, s.claims.Repository, s.claims.Digest, q, s.claims.Expiry.Add(-1), s.claims.Cache); err == nil && s.claims.KeyID != "k1" {
			t.Fatalf("a fuzzed query verified: %q", raw)
		}
	})
}
