package fill

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/content-cache/content-cache/internal/testkit"
	"github.com/distribution/reference"
)

// A request that reaches Join after the fill of its blob committed and
// ended gets no fill (it is served from storage): one fetch per blob. The
// memory of a commit lasts storedFor, and is forgotten after.
func TestJoinAfterCommit(t *testing.T) {
	clock := &testkit.Clock{}
	c := &Fills{fills: map[fillKey]*Fill{}, stored: map[digest.Digest]time.Time{}, now: clock.Now}
	d := digest.FromString("committed")
	c.mu.Lock()
	c.committed(d)
	c.mu.Unlock()
	if f, leader := c.Join(t.Context(), &Asker{}, d, true, false); f != nil || leader {
		t.Fatalf("Join after a commit started or joined a fill (leader %v): a second fetch", leader)
	}
	clock.Advance(storedFor)
	c.mu.Lock()
	c.committed(digest.FromString("another"))
	_, kept := c.stored[d]
	c.mu.Unlock()
	if kept {
		t.Fatal("a commit is remembered past storedFor")
	}
}

// A fill asking with a signed URL shares its answer with no credential,
// even one whose key is the signed asker's.
func TestAskingNeverSharesASignature(t *testing.T) {
	named, _ := reference.WithName("repo")
	repo := ident.Of(named)
	signed := &Asker{Repo: repo, Query: "cc-sig=x"}
	k := signed.Key() // a client whose Authorization keys as the signature
	f := &Fill{asking: signed}
	if f.Asking(k) {
		t.Fatal("a signed fetch's answer was offered to a credential")
	}
	f.asking = &Asker{Repo: repo}
	if !f.Asking(k) {
		t.Fatal("a credential's own fetch was not offered to it")
	}
}
