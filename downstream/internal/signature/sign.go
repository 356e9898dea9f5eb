package signature

import (
	"crypto/ed25519"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"
)

// Signer signs claims with one private key.
type Signer struct {
	KeyID      string
	PrivateKey ed25519.PrivateKey
}

// Sign returns the query parameters carrying claims, signed. claims.KeyID
// is set to the signer's; Expiry is truncated to the second.
func (s Signer) Sign(claims Claims) url.Values {
	claims.KeyID = s.KeyID
	claims.Expiry = claims.Expiry.Truncate(time.Second)
	sig := ed25519.Sign(s.PrivateKey, claims.message())
	return url.Values{
		ParamMethod: {claims.Method},
		ParamRepo:   {claims.Repository},
		ParamDigest: {claims.Digest},
		ParamExpiry: {formatExpiry(claims.Expiry)},
		ParamCache:  {claims.Cache},
		ParamKeyID:  {claims.KeyID},
		ParamSig:    {base64.RawURLEncoding.EncodeToString(sig)},
	}
}

// Public returns the signer's public key.
func (s Signer) Public() ed25519.PublicKey {
	return s.PrivateKey.Public().(ed25519.PublicKey)
}

func formatExpiry(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
