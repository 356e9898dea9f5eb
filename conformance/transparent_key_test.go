package conformance

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
)

// genKey returns a fresh Ed25519 private key as PKCS#8 PEM, what an
// origin's signingkey holds.
func genKey() ([]byte, error) {
	_, sk, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
