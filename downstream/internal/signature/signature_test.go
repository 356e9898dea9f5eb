package signature

import (
	"crypto/ed25519"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	testRepo   = "team/app"
	testDigest = "sha256:7b3a6b2e0cd1c9b1f4a5dba2c6c5f7f9c2d1e0a4b5c6d7e8f9a0b1c2d3e4f5a6"
	testCache  = "region-asia"
)

// seededKey is a fixed key, so that failures reproduce.
func seededKey(b byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	return ed25519.NewKeyFromSeed(seed)
}

var t0 = time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)

func testSigner() Signer { return Signer{KeyID: "k1", PrivateKey: seededKey(1)} }

func testVerifier(t *testing.T, signers ...Signer) *Verifier {
	t.Helper()
	var keys []PublicKey
	for _, s := range signers {
		keys = append(keys, PublicKey{ID: s.KeyID, Key: s.Public()})
	}
	v, err := NewVerifier(keys...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func testClaims() Claims {
	return Claims{Method: "GET", Repository: testRepo, Digest: testDigest, Expiry: t0.Add(5 * time.Minute), Cache: testCache}
}

func TestSignVerify(t *testing.T) {
	s := testSigner()
	v := testVerifier(t, s)
	q := s.Sign(testClaims())
	// The query survives a trip through a URL.
	u, err := url.Parse("https://cache.example.com/v2/" + testRepo + "/blobs/" + testDigest + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify("GET", testRepo, testDigest, u.Query(), t0, testCache)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := testClaims()
	want.KeyID = "k1"
	if c.Method != want.Method || c.Repository != want.Repository || c.Digest != want.Digest || !c.Expiry.Equal(want.Expiry) || c.Cache != want.Cache || c.KeyID != want.KeyID {
		t.Fatalf("claims %+v, want %+v", c, want)
	}
	// HEAD is allowed by a GET signature; up to the last second.
	if _, err := v.Verify("HEAD", testRepo, testDigest, q, want.Expiry.Add(-time.Nanosecond), testCache); err != nil {
		t.Fatalf("HEAD just before expiry: %v", err)
	}
}

// TestRefusals is the security table: every way a presented signature must
// be refused, and the reason given.
func TestRefusals(t *testing.T) {
	s := testSigner()
	other := Signer{KeyID: "k2", PrivateKey: seededKey(2)}
	v := testVerifier(t, s, other)
	set := func(name, value string) func(url.Values) {
		return func(q url.Values) { q.Set(name, value) }
	}
	exp := testClaims().Expiry
	cases := []struct {
		name   string
		alter  func(url.Values)
		method string
		repo   string
		digest string
		now    time.Time
		cache  string
		want   error
	}{
		// A signature altered in each covered field.
		{name: "method altered", alter: set(ParamMethod, "DELETE"), method: "DELETE", want: ErrBadSignature},
		{name: "repository altered", alter: set(ParamRepo, "team/other"), repo: "team/other", want: ErrBadSignature},
		{name: "digest altered", alter: set(ParamDigest, "sha256:"+strings.Repeat("0", 64)), digest: "sha256:" + strings.Repeat("0", 64), want: ErrBadSignature},
		{name: "expiry extended", alter: set(ParamExpiry, strconv.FormatInt(exp.Add(time.Hour).Unix(), 10)), want: ErrBadSignature},
		{name: "expiry extended by one second", alter: set(ParamExpiry, strconv.FormatInt(exp.Unix()+1, 10)), want: ErrBadSignature},
		{name: "cache altered", alter: set(ParamCache, "region-us"), cache: "region-us", want: ErrBadSignature},
		{name: "key id altered to another known key", alter: set(ParamKeyID, "k2"), want: ErrBadSignature},
		{name: "signature bit flipped", alter: func(q url.Values) {
			sig := []byte(q.Get(ParamSig))
			if sig[0] == 'A' {
				sig[0] = 'B'
			} else {
				sig[0] = 'A'
			}
			q.Set(ParamSig, string(sig))
		}, want: ErrBadSignature},
		{name: "signed by a key the verifier has under another id", alter: func(q url.Values) {
			c := testClaims()
			for k := range q {
				delete(q, k)
			}
			for k, vs := range (Signer{KeyID: "k1", PrivateKey: seededKey(2)}).Sign(c) {
				q[k] = vs
			}
		}, want: ErrBadSignature},
		// Time.
		{name: "expired", now: exp, want: ErrExpired},
		{name: "replay after expiry", now: exp.Add(24 * time.Hour), want: ErrExpired},
		// Issued for cache A, presented to cache B.
		{name: "other cache", cache: "region-us", want: ErrWrongCache},
		{name: "no cache name", cache: "", want: ErrWrongCache},
		// A valid signature presented for another request.
		{name: "other repository", repo: "team/other", want: ErrWrongResource},
		{name: "repository prefix", repo: "team", want: ErrWrongResource},
		{name: "other digest", digest: "sha256:" + strings.Repeat("1", 64), want: ErrWrongResource},
		{name: "other method", method: "PUT", want: ErrWrongResource},
		// Keys.
		{name: "unknown key id", alter: set(ParamKeyID, "retired"), want: ErrUnknownKey},
		// Malformed.
		{name: "no signature", alter: func(q url.Values) { q.Del(ParamSig) }, want: ErrMalformed},
		{name: "no expiry", alter: func(q url.Values) { q.Del(ParamExpiry) }, want: ErrMalformed},
		{name: "empty cache", alter: set(ParamCache, ""), want: ErrMalformed},
		{name: "cache given twice", alter: func(q url.Values) { q.Add(ParamCache, "region-us") }, want: ErrMalformed},
		{name: "expiry with a plus sign", alter: set(ParamExpiry, "+"+strconv.FormatInt(exp.Unix(), 10)), want: ErrMalformed},
		{name: "expiry with a leading zero", alter: set(ParamExpiry, "0"+strconv.FormatInt(exp.Unix(), 10)), want: ErrMalformed},
		{name: "expiry not a number", alter: set(ParamExpiry, "tomorrow"), want: ErrMalformed},
		{name: "signature truncated", alter: func(q url.Values) { q.Set(ParamSig, q.Get(ParamSig)[:40]) }, want: ErrMalformed},
		{name: "signature padded", alter: func(q url.Values) { q.Set(ParamSig, q.Get(ParamSig)+"==") }, want: ErrMalformed},
		{name: "repository too long", alter: set(ParamRepo, strings.Repeat("a", maxValue+1)), want: ErrMalformed},
		{name: "no parameters", alter: func(q url.Values) {
			for k := range q {
				delete(q, k)
			}
		}, want: ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := s.Sign(testClaims())
			if tc.alter != nil {
				tc.alter(q)
			}
			method, repo, digest, now, cache := "GET", testRepo, testDigest, t0, testCache
			if tc.method != "" {
				method = tc.method
			}
			if tc.repo != "" {
				repo = tc.repo
			}
			if tc.digest != "" {
				digest = tc.digest
			}
			if !tc.now.IsZero() {
				now = tc.now
			}
			if tc.cache != "" || tc.name == "no cache name" {
				cache = tc.cache
			}
			_, err := v.Verify(method, repo, digest, q, now, cache)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestReplayWithinLifetime documents what a signature does not prevent: it
// is a bearer token for one blob at one cache until it expires.
func TestReplayWithinLifetime(t *testing.T) {
	s := testSigner()
	v := testVerifier(t, s)
	q := s.Sign(testClaims())
	for _, now := range []time.Time{t0, t0.Add(time.Minute), t0.Add(5*time.Minute - time.Second)} {
		if _, err := v.Verify("GET", testRepo, testDigest, q, now, testCache); err != nil {
			t.Fatalf("at %s: %v", now, err)
		}
	}
	if _, err := v.Verify("GET", testRepo, testDigest, q, t0.Add(5*time.Minute), testCache); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v, want ErrExpired", err)
	}
}

// TestRotation: a verifier holding the old and new keys accepts both; one
// holding only the new key refuses the old signatures by key id.
func TestRotation(t *testing.T) {
	old := Signer{KeyID: "2026-11", PrivateKey: seededKey(3)}
	cur := Signer{KeyID: "2026-12", PrivateKey: seededKey(4)}
	both := testVerifier(t, old, cur)
	onlyNew := testVerifier(t, cur)
	qOld, qNew := old.Sign(testClaims()), cur.Sign(testClaims())
	for name, q := range map[string]url.Values{"old": qOld, "new": qNew} {
		if _, err := both.Verify("GET", testRepo, testDigest, q, t0, testCache); err != nil {
			t.Errorf("%s key, both accepted: %v", name, err)
		}
	}
	if _, err := onlyNew.Verify("GET", testRepo, testDigest, qNew, t0, testCache); err != nil {
		t.Errorf("new key: %v", err)
	}
	if _, err := onlyNew.Verify("GET", testRepo, testDigest, qOld, t0, testCache); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old key after rotation: %v, want ErrUnknownKey", err)
	}
}

// TestMessageUnambiguous: moving bytes between adjacent fields changes what
// is signed.
func TestMessageUnambiguous(t *testing.T) {
	a := Claims{Method: "GET", Repository: "a/b", Digest: "c", Cache: "x", Expiry: t0}
	b := Claims{Method: "GET", Repository: "a/", Digest: "bc", Cache: "x", Expiry: t0}
	if string(a.message()) == string(b.message()) {
		t.Fatal("two claim sets share one message")
	}
}

func TestNewVerifierErrors(t *testing.T) {
	pub := testSigner().Public()
	cases := map[string][]PublicKey{
		"no id":     {{Key: pub}},
		"short key": {{ID: "k", Key: pub[:10]}},
		"duplicate": {{ID: "k", Key: pub}, {ID: "k", Key: pub}},
	}
	for name, keys := range cases {
		if _, err := NewVerifier(keys...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
