package signature

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
)

func TestPEMRoundTrip(t *testing.T) {
	s := testSigner()
	privPEM, err := MarshalPrivateKeyPEM(s.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := MarshalPublicKeyPEM(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKeyPEM(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKeyPEM(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := NewVerifier(PublicKey{ID: "k", Key: pub})
	if err != nil {
		t.Fatal(err)
	}
	q := Signer{KeyID: "k", PrivateKey: priv}.Sign(testClaims())
	if _, err := v2.Verify("GET", testRepo, testDigest, q, t0, testCache); err != nil {
		t.Fatal(err)
	}
}

func TestPEMErrors(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPriv, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	pubPEM, _ := MarshalPublicKeyPEM(testSigner().Public())
	cases := []struct {
		name string
		priv bool
		data []byte
		want string
	}{
		{"not PEM", true, []byte("hello"), "no PEM block found"},
		{"public as private", true, pubPEM, `PEM block "PUBLIC KEY", expected "PRIVATE KEY"`},
		{"ECDSA private", true, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecPriv}), "expected Ed25519"},
		{"ECDSA public", false, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: ecPub}), "expected Ed25519"},
		{"garbage DER", false, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}), "PKIX public key"},
	}
	for _, tc := range cases {
		var err error
		if tc.priv {
			_, err = ParsePrivateKeyPEM(tc.data)
		} else {
			_, err = ParsePublicKeyPEM(tc.data)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
}

// TestThumbprintRFC8037 checks the default key id against the example in
// RFC 8037 appendix A.3.
func TestThumbprintRFC8037(t *testing.T) {
	x, err := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(x)
	if err != nil {
		t.Fatal(err)
	}
	if want := "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Fatalf("thumbprint %s, want %s", got, want)
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	a, b := testSigner(), Signer{KeyID: "k2", PrivateKey: seededKey(2)}
	doc, err := MarshalJWKS([]PublicKey{{ID: a.KeyID, Key: a.Public()}, {ID: b.KeyID, Key: b.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	// The document is plain JWKS: kty OKP, crv Ed25519, no private part.
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(doc, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Keys) != 2 || raw.Keys[0]["kty"] != "OKP" || raw.Keys[0]["crv"] != "Ed25519" || raw.Keys[0]["alg"] != "EdDSA" || raw.Keys[0]["kid"] != "k1" {
		t.Fatalf("JWKS %s", doc)
	}
	if _, hasD := raw.Keys[0]["d"]; hasD {
		t.Fatalf("JWKS carries a private key: %s", doc)
	}
	v, err := ParseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Signer{a, b} {
		if _, err := v.Verify("GET", testRepo, testDigest, s.Sign(testClaims()), t0, testCache); err != nil {
			t.Errorf("key %s: %v", s.KeyID, err)
		}
	}
	if _, err := v.Verify("GET", testRepo, testDigest, (Signer{KeyID: "k3", PrivateKey: seededKey(3)}).Sign(testClaims()), t0, testCache); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("key not in the set: %v", err)
	}
}

func TestParseJWKSErrors(t *testing.T) {
	pub := base64.RawURLEncoding.EncodeToString(testSigner().Public())
	cases := map[string]string{
		"not JSON":   `{`,
		"empty set":  `{"keys":[]}`,
		"no kid":     `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + pub + `"}]}`,
		"EC key":     `{"keys":[{"kty":"EC","crv":"P-256","kid":"e","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uI5hXjgQ","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`,
		"wrong alg":  `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","alg":"ES256","x":"` + pub + `"}]}`,
		"enc use":    `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","use":"enc","x":"` + pub + `"}]}`,
		"duplicates": `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"` + pub + `"},{"kty":"OKP","crv":"Ed25519","kid":"k","x":"` + pub + `"}]}`,
	}
	for name, doc := range cases {
		if v, err := ParseJWKS([]byte(doc)); err == nil {
			t.Errorf("%s: no error, keys %v", name, v.Keys())
		}
	}
}
