package keyring

import (
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/sirupsen/logrus"
)

func key(t *testing.T, b byte) (signature.Signer, signature.PublicKey) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = b
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	id, err := signature.Thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	return signature.Signer{KeyID: id, PrivateKey: priv}, signature.PublicKey{ID: id, Key: pub}
}

// jwksServer serves the keys set, counting requests.
type jwksServer struct {
	mu    sync.Mutex
	keys  []signature.PublicKey
	count atomic.Int64
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.count.Add(1)
	s.mu.Lock()
	doc, err := signature.MarshalJWKS(s.keys)
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	_, _ = w.Write(doc)
}

func (s *jwksServer) set(keys ...signature.PublicKey) {
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
}

func verify(k *Keyring, s signature.Signer, now time.Time) error {
	q := s.Sign(signature.Claims{Method: "GET", Repository: "a/b", Digest: "sha256:00", Expiry: now.Add(time.Minute), Cache: "c"})
	_, err := k.Verifier().Verify("GET", "a/b", "sha256:00", q, now, "c")
	return err
}

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// TestKeyring: static keys are in force at once; the endpoint's keys after
// a load, kept with the static ones; a failed load keeps what is in force;
// an unknown key id reloads at most once per minReload.
func TestKeyring(t *testing.T) {
	staticSigner, staticKey := key(t, 1)
	fetchedSigner, fetchedKey := key(t, 2)
	rotatedSigner, rotatedKey := key(t, 3)
	js := &jwksServer{}
	js.set(fetchedKey)
	srv := httptest.NewServer(js)
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/api/v0/content_caches/keys")
	k, err := New([]signature.PublicKey{staticKey}, u, time.Minute, srv.Client(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := verify(k, staticSigner, now); err != nil {
		t.Fatalf("static key before any load: %v", err)
	}
	if err := verify(k, fetchedSigner, now); !errors.Is(err, signature.ErrUnknownKey) {
		t.Fatalf("endpoint key before a load: %v, want unknown key", err)
	}
	if err := k.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]signature.Signer{"static": staticSigner, "fetched": fetchedSigner} {
		if err := verify(k, s, now); err != nil {
			t.Fatalf("%s key after a load: %v", name, err)
		}
	}
	// The origin rotates; an unknown key id was just loaded for: no reload.
	js.set(fetchedKey, rotatedKey)
	before := js.count.Load()
	if k.Reload(t.Context()) || js.count.Load() != before {
		t.Fatal("Reload asked the endpoint again within minReload")
	}
	if err := verify(k, rotatedSigner, now); !errors.Is(err, signature.ErrUnknownKey) {
		t.Fatalf("rotated key before a reload: %v", err)
	}
	k.mu.Lock()
	k.lastLoad = time.Now().Add(-minReload)
	k.mu.Unlock()
	if !k.Reload(t.Context()) {
		t.Fatal("Reload did not load after minReload")
	}
	if err := verify(k, rotatedSigner, now); err != nil {
		t.Fatalf("rotated key after a reload: %v", err)
	}
	// A failing endpoint keeps the keys in force.
	srv.Close()
	if err := k.Load(t.Context()); err == nil {
		t.Fatal("Load from a closed endpoint succeeded")
	}
	if err := verify(k, rotatedSigner, now); err != nil {
		t.Fatalf("after a failed load: %v", err)
	}
}
