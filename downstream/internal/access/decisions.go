package access

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/content-cache/content-cache/downstream/internal/metrics"
)

// maxDecisions bounds the decision cache; past it, expired entries are
// dropped, and if none are, the whole cache is (it only costs a round trip).
const maxDecisions = 100_000

// Key identifies a credential without keeping it: an HMAC of the whole
// Authorization header (empty for anonymous requests) under a secret of the
// instance. A bare hash of "Basic base64(user:pass)" could be cracked by
// whoever reads it (a memory dump, a shared store later); the HMAC cannot
// be without the secret, which never leaves the process.
type Key [sha256.Size]byte

// Hasher keys credentials for one instance. Its MACs are pooled: one
// per request would cost two allocations on the hot path.
type Hasher struct{ macs *sync.Pool }

// NewHasher draws a fresh secret: keys mean nothing to another process.
func NewHasher() Hasher {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // never fails (crypto/rand)
	return Hasher{macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}}
}

func (h Hasher) Key(authorization string) Key {
	m := h.macs.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(authorization))
	var k Key
	m.Sum(k[:0])
	h.macs.Put(m)
	return k
}

// DecisionKey is a credential on a repository: what a decision is about.
type DecisionKey struct {
	Cred Key
	Repo ident.Key
}

// Decisions remembers, for a short while, that the origin allowed a
// credential to pull from a repository. Denials are never remembered: the
// next request asks again, so a grant takes effect at once.
//
// Every decision is counted in metrics: an allowed answer found here
// (cached), and each answer of the origin (asked).
type Decisions struct {
	ttl     time.Duration
	ttls    map[string]time.Duration // by registry (ident's origin), when set
	now     func() time.Time
	metrics *metrics.Metrics // nil counts nothing

	mu      sync.Mutex
	allowed map[DecisionKey]time.Time // expiry
}

// NewDecisions builds the decision cache of one Cache, counting into m.
func NewDecisions(ttl time.Duration, now func() time.Time, m *metrics.Metrics) *Decisions {
	return &Decisions{ttl: ttl, now: now, metrics: m, allowed: make(map[DecisionKey]time.Time)}
}

// WithTTL sets the lifetime of the decisions on repositories of the
// registry named origin (its authttl); before use only.
func (d *Decisions) WithTTL(origin string, ttl time.Duration) *Decisions {
	if d.ttls == nil {
		d.ttls = map[string]time.Duration{}
	}
	d.ttls[origin] = ttl
	return d
}

func (d *Decisions) ttlOf(repo ident.Key) time.Duration {
	if t, ok := d.ttls[repo.Origin]; ok {
		return t
	}
	return d.ttl
}

// IsAllowed reports whether a still-valid "allowed" answer exists.
func (d *Decisions) IsAllowed(cred Key, repo ident.Key) bool {
	if d.ttlOf(repo) <= 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	exp, ok := d.allowed[DecisionKey{cred, repo}]
	if !ok {
		return false
	}
	if !d.now().Before(exp) {
		delete(d.allowed, DecisionKey{cred, repo})
		return false
	}
	d.metrics.Decision(repo.Origin, metrics.DecisionAllowed, metrics.SourceCached)
	return true
}

// Allow records that the origin just allowed cred to pull from repo.
func (d *Decisions) Allow(cred Key, repo ident.Key) {
	d.metrics.Decision(repo.Origin, metrics.DecisionAllowed, metrics.SourceAsked)
	ttl := d.ttlOf(repo)
	if ttl <= 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.now()
	if len(d.allowed) >= maxDecisions {
		for k, exp := range d.allowed {
			if !now.Before(exp) {
				delete(d.allowed, k)
			}
		}
		if len(d.allowed) >= maxDecisions {
			clear(d.allowed)
		}
	}
	d.allowed[DecisionKey{cred, repo}] = now.Add(ttl)
}

// Forget drops what is known of cred for repo, after the origin refused it.
func (d *Decisions) Forget(cred Key, repo ident.Key) {
	d.metrics.Decision(repo.Origin, metrics.DecisionDenied, metrics.SourceAsked)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.allowed, DecisionKey{cred, repo})
}
