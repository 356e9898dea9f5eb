package downstream

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/metrics"
)

// maxDecisions bounds the decision cache; past it, expired entries are
// dropped, and if none are, the whole cache is (it only costs a round trip).
const maxDecisions = 100_000

// credKey identifies a credential without keeping it: an HMAC of the whole
// Authorization header (empty for anonymous requests) under a secret of the
// instance. A bare hash of "Basic base64(user:pass)" could be cracked by
// whoever reads it (a memory dump, a shared store later); the HMAC cannot
// be without the secret, which never leaves the process.
type credKey [sha256.Size]byte

// credHasher keys credentials for one instance. Its MACs are pooled: one
// per request would cost two allocations on the hot path.
type credHasher struct{ macs *sync.Pool }

// newCredHasher draws a fresh secret: keys mean nothing to another process.
func newCredHasher() credHasher {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // never fails (crypto/rand)
	return credHasher{macs: &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}}
}

func (h credHasher) key(authorization string) credKey {
	m := h.macs.Get().(hash.Hash)
	m.Reset()
	m.Write([]byte(authorization))
	var k credKey
	m.Sum(k[:0])
	h.macs.Put(m)
	return k
}

type decisionKey struct {
	cred credKey
	repo string
}

// decisions remembers, for a short while, that the origin allowed a
// credential to pull from a repository. Denials are never remembered: the
// next request asks again, so a grant takes effect at once.
//
// Every decision is counted in metrics: an allowed answer found here
// (cached), and each answer of the origin (asked).
type decisions struct {
	ttl     time.Duration
	now     func() time.Time
	metrics *metrics.Metrics // nil counts nothing

	mu      sync.Mutex
	allowed map[decisionKey]time.Time // expiry
}

// newDecisions builds the decision cache of one Cache, counting into m.
func newDecisions(ttl time.Duration, now func() time.Time, m *metrics.Metrics) *decisions {
	return &decisions{ttl: ttl, now: now, metrics: m, allowed: make(map[decisionKey]time.Time)}
}

// isAllowed reports whether a still-valid "allowed" answer exists.
func (d *decisions) isAllowed(cred credKey, repo string) bool {
	if d.ttl <= 0 {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	exp, ok := d.allowed[decisionKey{cred, repo}]
	if !ok {
		return false
	}
	if !d.now().Before(exp) {
		delete(d.allowed, decisionKey{cred, repo})
		return false
	}
	d.metrics.Decision(metrics.DecisionAllowed, metrics.SourceCached)
	return true
}

// allow records that the origin just allowed cred to pull from repo.
func (d *decisions) allow(cred credKey, repo string) {
	d.metrics.Decision(metrics.DecisionAllowed, metrics.SourceAsked)
	if d.ttl <= 0 {
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
	d.allowed[decisionKey{cred, repo}] = now.Add(d.ttl)
}

// forget drops what is known of cred for repo, after the origin refused it.
func (d *decisions) forget(cred credKey, repo string) {
	d.metrics.Decision(metrics.DecisionDenied, metrics.SourceAsked)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.allowed, decisionKey{cred, repo})
}
