package signature

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// JWKs of Ed25519 public keys (RFC 8037) are written and read here, without
// a JOSE library: the cache imports this package, and its middleware pulls
// in nothing distribution's registry does not (see depcheck_test.go).

// jwk is the part of a JSON Web Key this package writes and reads.
type jwk struct {
	Use string `json:"use,omitempty"`
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Crv string `json:"crv,omitempty"`
	Alg string `json:"alg,omitempty"`
	X   string `json:"x,omitempty"`
	D   string `json:"d,omitempty"`
}

type jwkSet struct {
	Keys []jwk `json:"keys"`
}

// Thumbprint is the default key id: the key's RFC 7638 JWK thumbprint
// (SHA-256, base64url), the same on the origin and every cache without
// anyone naming the key.
func Thumbprint(key ed25519.PublicKey) (string, error) {
	if len(key) != ed25519.PublicKeySize {
		return "", fmt.Errorf("signature: thumbprint: key is %d bytes, expected %d", len(key), ed25519.PublicKeySize)
	}
	// RFC 7638 section 3.2: the required members, sorted, no whitespace.
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(key) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// MarshalJWKS writes keys as a JSON Web Key Set, what the origin's key
// endpoint serves.
func MarshalJWKS(keys []PublicKey) ([]byte, error) {
	set := jwkSet{Keys: make([]jwk, 0, len(keys))}
	for _, k := range keys {
		if len(k.Key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signature: key %q is %d bytes, expected an Ed25519 public key", k.ID, len(k.Key))
		}
		set.Keys = append(set.Keys, jwk{Use: "sig", Kty: "OKP", Kid: k.ID, Crv: "Ed25519", Alg: "EdDSA", X: base64.RawURLEncoding.EncodeToString(k.Key)})
	}
	return json.Marshal(set)
}

// ParseJWKS reads a JSON Web Key Set of Ed25519 public keys into a
// Verifier. A key of another type, a private key, a key without an id or
// meant for another use or algorithm is an error rather than skipped: a
// cache silently ignoring the origin's new key would refuse every pull.
func ParseJWKS(data []byte) (*Verifier, error) {
	var set jwkSet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("signature: JWKS: %v", err)
	}
	keys := make([]PublicKey, 0, len(set.Keys))
	for i, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) is kty %q crv %q, expected an Ed25519 public key (OKP, Ed25519)", i, k.Kid, k.Kty, k.Crv)
		}
		if k.D != "" {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) is a private key, expected an Ed25519 public key", i, k.Kid)
		}
		pub, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) has no valid x, expected an Ed25519 public key", i, k.Kid)
		}
		if k.Alg != "" && k.Alg != "EdDSA" {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) has alg %q, expected EdDSA", i, k.Kid, k.Alg)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) has use %q, expected sig", i, k.Kid, k.Use)
		}
		keys = append(keys, PublicKey{ID: k.Kid, Key: ed25519.PublicKey(pub)})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("signature: JWKS has no keys")
	}
	return NewVerifier(keys...)
}
