package signature

import (
	"encoding/binary"
	"time"
)

// Query parameter names. See the package documentation.
const (
	ParamMethod = "cc-method"
	ParamRepo   = "cc-repo"
	ParamDigest = "cc-digest"
	ParamExpiry = "cc-exp"
	ParamCache  = "cc-cache"
	ParamKeyID  = "cc-kid"
	ParamSig    = "cc-sig"
)

// version labels the message format, so that a later format can never
// verify as this one.
const version = "content-cache/blob-signature/v1"

// Claims are what a signature allows: one method on one blob of one
// repository, at one cache, until Expiry.
type Claims struct {
	Method     string
	Repository string
	Digest     string
	// Expiry is kept to the second (the URL carries Unix seconds).
	Expiry time.Time
	Cache  string
	// KeyID names the key that signed; Sign fills it in.
	KeyID string
}

// message is the byte string signed: every field length-prefixed, so that
// moving bytes from one field to the next changes the message.
func (c Claims) message() []byte {
	fields := []string{
		version,
		c.Method,
		c.Repository,
		c.Digest,
		formatExpiry(c.Expiry),
		c.Cache,
		c.KeyID,
	}
	n := 0
	for _, f := range fields {
		n += 4 + len(f)
	}
	b := make([]byte, 0, n)
	for _, f := range fields {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}
