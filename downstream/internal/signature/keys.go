package signature

import (
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// ParsePrivateKeyPEM reads an Ed25519 private key from a PEM "PRIVATE KEY"
// block (PKCS#8, as `openssl genpkey -algorithm ed25519` writes it).
func ParsePrivateKeyPEM(data []byte) (ed25519.PrivateKey, error) {
	der, err := pemBlock(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("signature: PKCS#8 private key: %v", err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signature: the private key is %T, expected Ed25519", k)
	}
	return priv, nil
}

// ParsePublicKeyPEM reads an Ed25519 public key from a PEM "PUBLIC KEY"
// block (PKIX, as `openssl pkey -pubout` writes it).
func ParsePublicKeyPEM(data []byte) (ed25519.PublicKey, error) {
	der, err := pemBlock(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("signature: PKIX public key: %v", err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("signature: the public key is %T, expected Ed25519", k)
	}
	return pub, nil
}

func pemBlock(data []byte, typ string) ([]byte, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("signature: no PEM block found, expected %q", typ)
	}
	if b.Type != typ {
		return nil, fmt.Errorf("signature: PEM block %q, expected %q", b.Type, typ)
	}
	return b.Bytes, nil
}

// MarshalPrivateKeyPEM writes key as a PKCS#8 PEM block.
func MarshalPrivateKeyPEM(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKeyPEM writes key as a PKIX PEM block.
func MarshalPublicKeyPEM(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// Thumbprint is the default key id: the key's RFC 7638 JWK thumbprint
// (SHA-256, base64url), the same on the origin and every cache without
// anyone naming the key.
func Thumbprint(key ed25519.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: key}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("signature: thumbprint: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// MarshalJWKS writes keys as a JSON Web Key Set, what the origin's key
// endpoint serves.
func MarshalJWKS(keys []PublicKey) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(keys))}
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.Key, KeyID: k.ID, Algorithm: string(jose.EdDSA), Use: "sig"})
	}
	return json.Marshal(set)
}

// ParseJWKS reads a JSON Web Key Set of Ed25519 public keys into a
// Verifier. A key of another type, a private key, a key without an id or
// meant for another use or algorithm is an error rather than skipped: a
// cache silently ignoring the origin's new key would refuse every pull.
func ParseJWKS(data []byte) (*Verifier, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("signature: JWKS: %v", err)
	}
	keys := make([]PublicKey, 0, len(set.Keys))
	for i, k := range set.Keys {
		pub, ok := k.Key.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) is %T, expected an Ed25519 public key", i, k.KeyID, k.Key)
		}
		if k.Algorithm != "" && k.Algorithm != string(jose.EdDSA) {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) has alg %q, expected EdDSA", i, k.KeyID, k.Algorithm)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("signature: JWKS key %d (%q) has use %q, expected sig", i, k.KeyID, k.Use)
		}
		keys = append(keys, PublicKey{ID: k.KeyID, Key: pub})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("signature: JWKS has no keys")
	}
	return NewVerifier(keys...)
}
