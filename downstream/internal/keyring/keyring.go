// Package keyring holds the origin's public keys a cache verifies signed
// URLs with: the configured PEM keys, plus those of the origin's key
// endpoint, read at start and again every refresh period.
package keyring

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/sirupsen/logrus"
)

// maxJWKS bounds the key document read from the origin.
const maxJWKS = 1 << 20

// Keyring is the current Verifier, swapped whole when the key endpoint
// changes.
type Keyring struct {
	static  []signature.PublicKey
	url     *url.URL
	client  *http.Client
	refresh time.Duration
	log     *logrus.Entry
	cur     atomic.Pointer[signature.Verifier]

	mu       sync.Mutex // one load at a time
	lastLoad time.Time  // when the last load was tried, under mu
}

// minReload spaces the loads that unknown key ids trigger, so that a flood
// of forged key ids cannot make the cache hammer the origin.
const minReload = 10 * time.Second

// New returns a keyring over static keys and, if keysURL is set, the keys
// it serves (call Run, or Load, to read them). client fetches keysURL.
func New(static []signature.PublicKey, keysURL *url.URL, refresh time.Duration, client *http.Client, log *logrus.Entry) (*Keyring, error) {
	k := &Keyring{static: static, url: keysURL, client: client, refresh: refresh, log: log}
	v, err := signature.NewVerifier(static...)
	if err != nil {
		return nil, err
	}
	k.cur.Store(v)
	return k, nil
}

// Verifier returns the keys in force.
func (k *Keyring) Verifier() *signature.Verifier { return k.cur.Load() }

// Load reads the key endpoint once and puts its keys in force, with the
// static ones. On failure the keys in force stay: an origin that is down
// for a moment does not make the cache refuse every signed pull.
func (k *Keyring) Load(ctx context.Context) error {
	if k.url == nil {
		return nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.lastLoad = time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url.String(), nil)
	if err != nil {
		return err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return fmt.Errorf("reading the origin's keys from %s: %w", k.url.Redacted(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("reading the origin's keys from %s: status %d", k.url.Redacted(), resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS))
	if err != nil {
		return fmt.Errorf("reading the origin's keys from %s: %w", k.url.Redacted(), err)
	}
	fetched, err := signature.ParseJWKS(data)
	if err != nil {
		return fmt.Errorf("the origin's keys at %s: %w", k.url.Redacted(), err)
	}
	keys := append([]signature.PublicKey(nil), k.static...)
	for _, f := range fetched.Keys() {
		dup := false
		for _, s := range keys {
			if s.ID == f.ID {
				dup = true
				if !bytes.Equal(s.Key, f.Key) {
					// The configured key wins: the file is what an operator
					// checked.
					k.log.WithField("kid", f.ID).Warn("the origin's key endpoint serves another key under the id of a configured key; keeping the configured one")
				}
			}
		}
		if !dup {
			keys = append(keys, f)
		}
	}
	v, err := signature.NewVerifier(keys...)
	if err != nil {
		return err
	}
	k.cur.Store(v)
	return nil
}

// Reload loads the key endpoint again for a signature by a key id not in
// force (the origin may have started signing with a new key), unless a
// load was tried less than minReload ago. It reports whether it loaded.
func (k *Keyring) Reload(ctx context.Context) bool {
	if k.url == nil {
		return false
	}
	k.mu.Lock()
	recent := !k.lastLoad.IsZero() && time.Since(k.lastLoad) < minReload
	k.mu.Unlock()
	if recent {
		return false
	}
	if err := k.Load(ctx); err != nil {
		k.log.WithError(err).Warn("cannot load the origin's signing keys; keeping the keys in force")
		return false
	}
	return true
}

// Run loads the key endpoint now and every refresh period until ctx ends.
// Failures are logged and retried at the next period.
func (k *Keyring) Run(ctx context.Context) {
	if k.url == nil {
		return
	}
	t := time.NewTicker(k.refresh)
	defer t.Stop()
	for {
		if err := k.Load(ctx); err != nil && ctx.Err() == nil {
			k.log.WithError(err).Warn("cannot load the origin's signing keys; keeping the keys in force")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
