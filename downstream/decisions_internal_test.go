package downstream

import (
	"crypto/sha256"
	"encoding/base64"
	"testing"
)

// Credential keys are keyed by a secret of the instance: the same header
// gives the same key in one instance, another key in another, and never
// the bare SHA-256 of the header (crackable for Basic credentials).
func TestCredentialKeysAreKeyed(t *testing.T) {
	header := "Basic " + base64.StdEncoding.EncodeToString([]byte("carol:carol-pw"))
	a, b := newCredHasher(), newCredHasher()
	first, again := a.key(header), a.key(header)
	if first != again {
		t.Fatal("one instance keys one header two ways")
	}
	if a.key(header) == b.key(header) {
		t.Fatal("two instances key a header the same way: the key is not secret")
	}
	if a.key(header) == credKey(sha256.Sum256([]byte(header))) {
		t.Fatal("the key is the bare SHA-256 of the header")
	}
	if a.key(header) == a.key("") {
		t.Fatal("a credential keys like an anonymous request")
	}
}
