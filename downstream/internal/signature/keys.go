package signature

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
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
