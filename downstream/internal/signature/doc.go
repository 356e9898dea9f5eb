// Package signature signs and verifies the URLs an origin hands out when it
// redirects a blob download to a transparent content cache.
//
// # What is signed
//
// A signature covers the claims method, repository, digest, expiry (Unix
// seconds), the name of the cache it was issued for and the key id, in a
// length-prefixed encoding under a version label, so that no two claim sets
// share a message. The algorithm is Ed25519: the origin keeps the private
// key, caches only need the public keys.
//
// # In the URL
//
// The claims travel in the redirect URL's query, next to the path
// /v2/<repository>/blobs/<digest> they repeat:
//
//	cc-method  the HTTP method the signature allows (GET)
//	cc-repo    the repository
//	cc-digest  the blob digest
//	cc-exp     expiry, Unix seconds; refused at or after that second
//	cc-cache   the name of the cache the user was sent to
//	cc-kid     the id of the origin key that signed
//	cc-sig     the Ed25519 signature, base64url without padding
//
// The repository, digest and method are repeated in the query so that a
// refusal can say which claim did not match the request, rather than only
// "bad signature". Each parameter must appear exactly once; anything else is
// malformed. Other query parameters are ignored (and not covered).
//
// # Chained caches
//
// A signature names one cache: the one the user is assigned to, the edge.
// That cache accepts it by calling Verify with its own name. A cache that
// is asked with another cache's signature refuses it (ErrWrongCache), which
// keeps a user assigned to one cache from spending the signature at another.
// In a chain, the edge forwards a miss upstream with the same query; the
// upstream cache accepts it only if the signature names a cache it is
// configured to serve (its downstreams), and verifies it with that name:
//
//	name := query.Get(signature.ParamCache)
//	if !myDownstreams[name] && name != myName { refuse }
//	claims, err := verifier.Verify(method, repo, dgst, query, now, name)
//
// Nothing else is passed along: the name inside the signature is the only
// one that counts, so a forged header cannot widen what a signature allows.
//
// # Keys
//
// Keys rotate by id: the origin signs with one private key (PKCS#8 PEM) and
// publishes every public key still accepted as a JWKS document (RFC 7517,
// kty OKP, crv Ed25519, alg EdDSA) on its key endpoint; caches load that
// document, or PKIX PEM files, into a Verifier. A key id defaults to the
// key's RFC 7638 thumbprint.
package signature
