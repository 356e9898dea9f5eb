package fill

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// PeerKey derives the key of the internal endpoint from distribution's
// http.secret, under a label of its own: the secret itself signs other
// things (upload state), and is never sent.
func PeerKey(secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("content-cache internal endpoint v1"))
	return m.Sum(nil)
}

// peerSkew is how far a signed internal request's time may be from this
// replica's clock.
const peerSkew = 5 * time.Minute

// peerHeader carries "<unix time>.<nonce>.<hmac>".
const peerHeader = "Content-Cache-Peer"

// maxNonces bounds the nonces a replica remembers: far more internal
// requests than peerSkew ever sees (one per fill followed per replica);
// beyond it, requests are refused rather than memory grown.
const maxNonces = 1 << 20

// peerAuth authenticates the internal endpoint's requests. The MAC covers
// the replica a request is addressed to, its URI, its time and a random
// nonce, and a replica accepts each nonce once: a request seen on the
// cluster's network can neither be replayed to stream a fill again nor
// sent to the replica that leads the digest next. Only replicas hold the
// key (derived from http.secret).
type peerAuth struct {
	key  []byte
	self string // this replica's internal URL, as the others address it

	mu     sync.Mutex
	seen   map[string]time.Time // nonce → when it may be forgotten
	pruned int                  // len(seen) after the last pruning
}

func newPeerAuth(key []byte, self string) *peerAuth {
	return &peerAuth{key: key, self: normalPeer(self), seen: make(map[string]time.Time)}
}

func normalPeer(u string) string { return strings.TrimSuffix(u, "/") }

func peerMAC(key []byte, to, uri, at, nonce string) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "GET %s %s %s %s", to, uri, at, nonce)
	return hex.EncodeToString(m.Sum(nil))
}

// sign authenticates r, addressed to the replica at to, at now.
func (a *peerAuth) sign(r *http.Request, to string, now time.Time) {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand's contract)
	at, nonce := strconv.FormatInt(now.Unix(), 10), hex.EncodeToString(b[:])
	r.Header.Set(peerHeader, at+"."+nonce+"."+peerMAC(a.key, normalPeer(to), r.URL.RequestURI(), at, nonce))
}

// verify reports whether r was signed for this replica lately, with a
// nonce it has not accepted before; it remembers the nonce.
func (a *peerAuth) verify(r *http.Request, now time.Time) bool {
	at, rest, ok := strings.Cut(r.Header.Get(peerHeader), ".")
	nonce, mac, ok2 := strings.Cut(rest, ".")
	n, err := strconv.ParseInt(at, 10, 64)
	if !ok || !ok2 || err != nil || len(a.key) == 0 || len(nonce) != 32 {
		return false
	}
	t := time.Unix(n, 0)
	if d := now.Sub(t); d > peerSkew || d < -peerSkew {
		return false
	}
	if !hmac.Equal([]byte(mac), []byte(peerMAC(a.key, a.self, r.URL.RequestURI(), at, nonce))) {
		return false
	}
	return a.firstUse(nonce, t.Add(peerSkew), now)
}

// firstUse records nonce until forget, and reports whether it was new.
func (a *peerAuth) firstUse(nonce string, forget, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.seen[nonce]; ok {
		return false
	}
	if len(a.seen) > 2*a.pruned+1024 {
		for k, until := range a.seen {
			if now.After(until) {
				delete(a.seen, k)
			}
		}
		a.pruned = len(a.seen)
	}
	if len(a.seen) >= maxNonces {
		return false
	}
	a.seen[nonce] = forget
	return true
}
