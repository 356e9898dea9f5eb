package signature

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"time"
)

// maxValue bounds each parameter: distribution's repository names stop at
// 255 bytes and digests are far shorter, so anything longer is not ours.
const maxValue = 512

// signed is what a query carries: the claims and the signature over them.
type signed struct {
	claims Claims
	sig    []byte
}

// parseQuery reads the signature parameters of q. Every parameter must be
// present exactly once and non-empty, so that the cache and the verifier can
// never read different values of one parameter.
func parseQuery(q url.Values) (signed, error) {
	get := func(name string) (string, error) {
		vs, ok := q[name]
		switch {
		case !ok || len(vs) == 0:
			return "", fmt.Errorf("%w: parameter %s is missing", ErrMalformed, name)
		case len(vs) > 1:
			return "", fmt.Errorf("%w: parameter %s is given %d times", ErrMalformed, name, len(vs))
		case vs[0] == "":
			return "", fmt.Errorf("%w: parameter %s is empty", ErrMalformed, name)
		case len(vs[0]) > maxValue:
			return "", fmt.Errorf("%w: parameter %s is %d bytes long, at most %d allowed", ErrMalformed, name, len(vs[0]), maxValue)
		}
		return vs[0], nil
	}
	var s signed
	var err error
	fields := []struct {
		name string
		dst  *string
	}{
		{ParamMethod, &s.claims.Method},
		{ParamRepo, &s.claims.Repository},
		{ParamDigest, &s.claims.Digest},
		{ParamCache, &s.claims.Cache},
		{ParamKeyID, &s.claims.KeyID},
	}
	for _, f := range fields {
		if *f.dst, err = get(f.name); err != nil {
			return signed{}, err
		}
	}
	exp, err := get(ParamExpiry)
	if err != nil {
		return signed{}, err
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	// A leading "+" or zero would let two spellings share one signature.
	if err != nil || secs <= 0 || strconv.FormatInt(secs, 10) != exp {
		return signed{}, fmt.Errorf("%w: parameter %s is %q, expected Unix seconds", ErrMalformed, ParamExpiry, exp)
	}
	s.claims.Expiry = time.Unix(secs, 0)
	raw, err := get(ParamSig)
	if err != nil {
		return signed{}, err
	}
	if s.sig, err = base64.RawURLEncoding.Strict().DecodeString(raw); err != nil || len(s.sig) != ed25519.SignatureSize {
		return signed{}, fmt.Errorf("%w: parameter %s is not a base64url Ed25519 signature", ErrMalformed, ParamSig)
	}
	return s, nil
}
