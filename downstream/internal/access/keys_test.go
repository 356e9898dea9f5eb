package access

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
	a, b := NewHasher(), NewHasher()
	first, again := a.Key(header), a.Key(header)
	if first != again {
		t.Fatal("one instance keys one header two ways")
	}
	if a.Key(header) == b.Key(header) {
		t.Fatal("two instances key a header the same way: the key is not secret")
	}
	if a.Key(header) == Key(sha256.Sum256([]byte(header))) {
		t.Fatal("the key is the bare SHA-256 of the header")
	}
	if a.Key(header) == a.Key("") {
		t.Fatal("a credential keys like an anonymous request")
	}
}
