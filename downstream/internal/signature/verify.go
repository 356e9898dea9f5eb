package signature

import (
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"time"
)

// PublicKey is a verification key and its id.
type PublicKey struct {
	ID  string
	Key ed25519.PublicKey
}

// Verifier checks signatures against a fixed set of public keys. It is
// immutable: to rotate, build a new one and swap it in.
type Verifier struct {
	keys map[string]ed25519.PublicKey
}

// NewVerifier returns a Verifier accepting keys. Ids must be unique and
// non-empty.
func NewVerifier(keys ...PublicKey) (*Verifier, error) {
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys))}
	for _, k := range keys {
		if k.ID == "" {
			return nil, fmt.Errorf("signature: a public key has no key id")
		}
		if len(k.Key) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("signature: key %q is %d bytes, expected an Ed25519 public key (%d bytes)", k.ID, len(k.Key), ed25519.PublicKeySize)
		}
		if _, dup := v.keys[k.ID]; dup {
			return nil, fmt.Errorf("signature: key id %q is given twice", k.ID)
		}
		v.keys[k.ID] = k.Key
	}
	return v, nil
}

// Keys returns the verifier's keys, sorted by id.
func (v *Verifier) Keys() []PublicKey {
	out := make([]PublicKey, 0, len(v.keys))
	for id, k := range v.keys {
		out = append(out, PublicKey{ID: id, Key: k})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Verify checks that query carries a signature, by one of the verifier's
// keys, allowing method on repo's blob dgst at the cache cacheName, still
// valid at now. HEAD is allowed by a GET signature (it reveals less). It
// returns the claims, or an error wrapping one of the Err* reasons.
//
// The signature is checked before anything it claims is believed, so the
// reason given for a refusal is never an attacker's choice, except that a
// malformed or unknown-key query is refused before any key is used.
func (v *Verifier) Verify(method, repo, dgst string, query url.Values, now time.Time, cacheName string) (Claims, error) {
	s, err := parseQuery(query)
	if err != nil {
		return Claims{}, err
	}
	key, ok := v.keys[s.claims.KeyID]
	if !ok {
		return Claims{}, fmt.Errorf("%w: %q", ErrUnknownKey, s.claims.KeyID)
	}
	if !ed25519.Verify(key, s.claims.message(), s.sig) {
		return Claims{}, fmt.Errorf("%w (key %q)", ErrBadSignature, s.claims.KeyID)
	}
	c := s.claims
	if !now.Before(c.Expiry) {
		return Claims{}, fmt.Errorf("%w at %s (now %s)", ErrExpired, c.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if c.Method != method && (method != http.MethodHead || c.Method != http.MethodGet) {
		return Claims{}, fmt.Errorf("%w: signed for method %s, request is %s", ErrWrongResource, c.Method, method)
	}
	if c.Repository != repo {
		return Claims{}, fmt.Errorf("%w: signed for repository %q, request is for %q", ErrWrongResource, c.Repository, repo)
	}
	if c.Digest != dgst {
		return Claims{}, fmt.Errorf("%w: signed for digest %s, request is for %s", ErrWrongResource, c.Digest, dgst)
	}
	if c.Cache != cacheName {
		return Claims{}, fmt.Errorf("%w: signed for cache %q, this is %q", ErrWrongCache, c.Cache, cacheName)
	}
	return c, nil
}
