package access

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/downstream/internal/upstream"
	"github.com/opencontainers/go-digest"
)

// Offline is what the cache may answer while no upstream answers at all
// (offlinegrace): the last time the origin allowed each credential on each
// repository, and the digest the origin last gave for each tag. Only the
// origin's own answers go in; a refusal takes the credential out at once.
// Credentials are kept as keys (HMACs), never in clear.
//
// A nil *Offline (offlinegrace off) remembers nothing and allows nothing.
type Offline struct {
	grace time.Duration
	now   func() time.Time

	mu      sync.Mutex
	allowed map[DecisionKey]time.Time // the origin's last "allowed"
	tags    map[tagKey]tagAnswer
	// challenges are the origins' last 401 to a ping, by registry.
	challenges map[string]*Challenge
}

type tagKey struct {
	repo ident.Key
	tag  string
}

type tagAnswer struct {
	digest digest.Digest
	at     time.Time
}

// NewOffline remembers answers for grace; nil when grace is 0.
func NewOffline(grace time.Duration, now func() time.Time) *Offline {
	if grace <= 0 {
		return nil
	}
	return &Offline{grace: grace, now: now, allowed: map[DecisionKey]time.Time{}, tags: map[tagKey]tagAnswer{}, challenges: map[string]*Challenge{}}
}

// Grace is offlinegrace (0 when off).
func (o *Offline) Grace() time.Duration {
	if o == nil {
		return 0
	}
	return o.grace
}

// allow notes that the origin just allowed cred on repo.
func (o *Offline) allow(cred Key, repo ident.Key) {
	if o == nil {
		return
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.trim(now)
	o.allowed[DecisionKey{cred, repo}] = now
}

// forget takes cred's standing on repo away after the origin refused it: a
// refused credential is never served offline, whatever it pulled before.
func (o *Offline) forget(cred Key, repo ident.Key) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.allowed, DecisionKey{cred, repo})
}

// Allowed reports whether the origin allowed cred on repo less than
// offlinegrace ago.
func (o *Offline) Allowed(cred Key, repo ident.Key) bool {
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	at, ok := o.allowed[DecisionKey{cred, repo}]
	return ok && o.now().Sub(at) < o.grace
}

// Known reports whether the origin of registry allowed cred on any of its
// repositories less than offlinegrace ago (and did not refuse it since on
// that one). It reads every decision: pings are few.
func (o *Offline) Known(cred Key, registry string) bool {
	if o == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	for k, at := range o.allowed {
		if k.Cred == cred && k.Repo.Origin == registry && now.Sub(at) < o.grace {
			return true
		}
	}
	return false
}

// Resolved notes the digest the origin just gave for tag in repo.
func (o *Offline) Resolved(repo ident.Key, tag string, d digest.Digest) {
	if o == nil {
		return
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.trim(now)
	o.tags[tagKey{repo, tag}] = tagAnswer{d, now}
}

// Tag returns the digest the origin last gave for tag in repo, if it gave
// it less than offlinegrace ago.
func (o *Offline) Tag(repo ident.Key, tag string) (digest.Digest, bool) {
	if o == nil {
		return "", false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	a, ok := o.tags[tagKey{repo, tag}]
	if !ok || o.now().Sub(a.at) >= o.grace {
		return "", false
	}
	return a.digest, true
}

// trim bounds the memory as the decision cache is bounded: past
// maxDecisions entries, those older than the grace go, and if none do, all
// of them (the cost is only what could have been served in an outage).
// Under mu.
func (o *Offline) trim(now time.Time) {
	if len(o.allowed)+len(o.tags) < maxDecisions {
		return
	}
	for k, at := range o.allowed {
		if now.Sub(at) >= o.grace {
			delete(o.allowed, k)
		}
	}
	for k, a := range o.tags {
		if now.Sub(a.at) >= o.grace {
			delete(o.tags, k)
		}
	}
	if len(o.allowed) >= maxDecisions/2 {
		clear(o.allowed)
	}
	if len(o.tags) >= maxDecisions/2 {
		clear(o.tags)
	}
}

// Outage reports whether err means that no upstream answered: no
// connection, a timeout, or a server error (5xx). A 401, 403, 404 or 429 is
// an answer, never an outage.
func Outage(err error) bool {
	if se, ok := upstream.IsAnswer(err); ok {
		return se.Status >= 500
	}
	var ue *upstream.UpstreamError
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled)
}

// ForgetTag drops what the origin gave for tag in repo, after it answered
// that the tag is not there (404).
func (o *Offline) ForgetTag(repo ident.Key, tag string) {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.tags, tagKey{repo, tag})
}

// Challenge is the origin's last answer to an unauthenticated ping (its
// 401 and WWW-Authenticate): what a client that pings first needs to learn
// how to authenticate while the origin is down. It holds no credential.
type Challenge struct {
	Header http.Header
	Body   []byte
	at     time.Time
}

// SetChallenge keeps the 401 answer of registry's origin to a ping.
func (o *Offline) SetChallenge(registry string, h http.Header, body []byte) {
	if o == nil {
		return
	}
	c := &Challenge{Header: h.Clone(), Body: body, at: o.now()}
	o.mu.Lock()
	o.challenges[registry] = c
	o.mu.Unlock()
}

// LastChallenge is the last 401 of registry's origin to a ping, if younger
// than offlinegrace.
func (o *Offline) LastChallenge(registry string) (*Challenge, bool) {
	if o == nil {
		return nil, false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.challenges[registry]
	if c == nil || o.now().Sub(c.at) >= o.grace {
		return nil, false
	}
	return c, true
}
