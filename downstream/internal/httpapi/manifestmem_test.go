package httpapi

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ociManifest is a valid OCI image manifest of about size bytes, distinct
// for each n.
func ociManifest(t *testing.T, n, size int) (distribution.Manifest, digest.Digest) {
	t.Helper()
	pad := strings.Repeat("x", max(size-300, 0))
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[],"annotations":{"n":"%d","pad":%q}}`,
		v1.MediaTypeImageManifest, digest.FromString("{}"), n, pad)
	m, _, err := distribution.UnmarshalManifest(v1.MediaTypeImageManifest, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return m, digest.FromString(body)
}

// Only bytes that hash to their digest are kept.
func TestEntryOfVerifiesDigest(t *testing.T) {
	m, d := ociManifest(t, 1, 0)
	if e := entryOf(m, d); e == nil || e.digest != d || !e.oci || e.list {
		t.Fatalf("entryOf(manifest, its digest) = %+v", e)
	}
	_, other := ociManifest(t, 2, 0)
	if e := entryOf(m, other); e != nil {
		t.Fatal("entryOf kept a manifest under a digest it does not hash to")
	}
	if e := entryOf(m, "sha256:short"); e != nil {
		t.Fatal("entryOf kept a manifest under a malformed digest")
	}
}

// The memory stays within its bounds, and a tag names the entry of the
// digest it last resolved to while that entry is kept.
func TestManifestMemoryBounds(t *testing.T) {
	mem := newManifestMemory(0, time.Now)
	big, bigD := ociManifest(t, 0, maxMemoryManifest+1000)
	mem.put(entryOf(big, bigD))
	if mem.get(bigD) != nil {
		t.Fatal("kept a manifest over maxMemoryManifest")
	}
	const size = 256 << 10
	n := maxMemoryBytes/size + 8
	digests := make([]digest.Digest, n)
	for i := range n {
		// The bounds hold whatever the entries are.
		p := []byte(fmt.Sprintf("%d%s", i, strings.Repeat("x", size)))
		d := digest.FromBytes(p)
		mem.put(&manifestEntry{digest: d, payload: p})
		digests[i] = d
		if mem.size > maxMemoryBytes {
			t.Fatalf("after %d entries: %d bytes kept, over %d", i+1, mem.size, maxMemoryBytes)
		}
	}
	if mem.get(digests[n-1]) == nil {
		t.Fatal("the last entry put is not kept")
	}
	named, _ := reference.WithName("public/app")
	repo := ident.Of(named).Key()
	mem.resolved(repo, "latest", digests[n-1])
	if e := mem.tagged(repo, "latest"); e == nil || e.digest != digests[n-1] {
		t.Fatalf("tagged = %v, want the entry of %s", e, digests[n-1])
	}
	if e := mem.tagged(repo, "other"); e != nil {
		t.Fatal("an unknown tag names an entry")
	}
	for i := range maxMemoryTags + 1 {
		mem.resolved(repo, fmt.Sprint("t", i), digests[n-1])
	}
	if len(mem.tags) > maxMemoryTags {
		t.Fatalf("%d tags kept, over %d", len(mem.tags), maxMemoryTags)
	}
}

// With blobttl, an entry unused for half of it is dropped (expiry may have
// removed the manifest from storage since); each use keeps it.
func TestManifestMemoryStale(t *testing.T) {
	now := time.Unix(1000, 0)
	mem := newManifestMemory(10*time.Second, func() time.Time { return now })
	m, d := ociManifest(t, 1, 0)
	mem.put(entryOf(m, d))
	named, _ := reference.WithName("public/app")
	repo := ident.Of(named).Key()
	mem.resolved(repo, "latest", d)
	for range 3 {
		now = now.Add(4 * time.Second)
		if mem.tagged(repo, "latest") == nil {
			t.Fatal("an entry used 4s ago (blobttl 10s) is gone")
		}
	}
	now = now.Add(5 * time.Second)
	if mem.get(d) != nil || mem.tagged(repo, "latest") != nil {
		t.Fatal("an entry unused for blobttl/2 is still served")
	}
	if mem.size != 0 {
		t.Fatalf("%d bytes counted after the only entry went", mem.size)
	}
}
