package signature

import "errors"

// The reasons Verify refuses a signature. Verify wraps them with details;
// compare with errors.Is.
var (
	// ErrMalformed: a parameter is missing, repeated, too long or does not
	// parse.
	ErrMalformed = errors.New("signature: malformed")
	// ErrUnknownKey: no public key with the signature's key id.
	ErrUnknownKey = errors.New("signature: unknown key id")
	// ErrBadSignature: the signature does not verify over the claims in the
	// query (a claim was altered, or it was made with another key).
	ErrBadSignature = errors.New("signature: bad signature")
	// ErrExpired: the signature is genuine but its expiry has passed.
	ErrExpired = errors.New("signature: expired")
	// ErrWrongResource: a genuine signature for another method, repository
	// or digest than the request's.
	ErrWrongResource = errors.New("signature: issued for another request")
	// ErrWrongCache: a genuine signature issued for another cache.
	ErrWrongCache = errors.New("signature: issued for another cache")
)
