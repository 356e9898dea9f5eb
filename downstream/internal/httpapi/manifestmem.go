package httpapi

import (
	"net/http"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/ocischema"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Bounds of the manifest memory. Manifests are a few KiB; past a bound,
// entries go in map order (a miss only costs a storage read).
const (
	maxMemoryBytes     = 16 << 20
	maxMemoryManifest  = 1 << 20 // larger ones are served from storage
	maxMemoryTags      = 10_000
	maxMemoryManifests = 10_000
)

// manifestMemory keeps verified manifests by digest, and the digest each
// tag last resolved to at the origin. It never authorizes anything: an
// entry is served only after the origin answered this very request for
// the repository, and a remembered digest only lets the origin answer an
// unchanged tag with a 304 (after its authorization passed) instead of
// reading its manifest. Reading a manifest through distribution (link,
// blob stat, data, unmarshal) was a quarter of the cache's CPU per
// manifest by tag.
//
// With blobttl, an entry nobody used for half of blobttl is dropped:
// expiry may have removed the manifest from storage by then (removal needs
// every pull record to be older than blobttl, and each use records a
// pull), and the next pull must fetch and store it again.
type manifestMemory struct {
	idle time.Duration // 0: entries never go stale
	now  func() time.Time

	mu        sync.Mutex
	size      int
	manifests map[digest.Digest]*manifestEntry
	tags      map[tagKey]digest.Digest
}

type tagKey struct {
	repo ident.Key
	tag  string
}

// manifestEntry is a manifest as distribution serves it from storage.
type manifestEntry struct {
	digest    digest.Digest
	mediaType string
	payload   []byte
	oci       bool      // an OCI image manifest: refused to clients that do not accept it
	list      bool      // a Docker manifest list: by tag, the origin rewrites it for clients that do not accept it
	used      time.Time // last put or served; under manifestMemory.mu
}

// newManifestMemory keeps manifests; with blobttl, for at most blobttl/2
// without a use.
func newManifestMemory(blobTTL time.Duration, now func() time.Time) *manifestMemory {
	return &manifestMemory{
		idle: blobTTL / 2, now: now,
		manifests: make(map[digest.Digest]*manifestEntry), tags: make(map[tagKey]digest.Digest),
	}
}

// entryOf is the entry of m, or nil when its payload does not hash to dgst:
// only verified bytes are kept.
func entryOf(m distribution.Manifest, dgst digest.Digest) *manifestEntry {
	mediaType, payload, err := m.Payload()
	if err != nil || !dgst.Algorithm().Available() || dgst.Algorithm().FromBytes(payload) != dgst {
		return nil
	}
	if mediaType == "" {
		mediaType = v1.MediaTypeImageManifest
	}
	e := &manifestEntry{digest: dgst, mediaType: mediaType, payload: payload}
	_, e.oci = m.(*ocischema.DeserializedManifest)
	if ml, ok := m.(*manifestlist.DeserializedManifestList); ok {
		e.list = ml.MediaType == manifestlist.MediaTypeManifestList
	}
	return e
}

// asIs reports whether the origin, resolving a tag to e, serves e itself
// to r: not an OCI manifest refused for the Accept, nor a manifest list it
// replaces with the default platform's manifest. Only then may an
// unchanged tag be answered from e.
func (e *manifestEntry) asIs(r *http.Request) bool {
	return (!e.oci || acceptsOCIManifest(r)) && (!e.list || accepts(r, manifestlist.MediaTypeManifestList))
}

// get returns the entry of dgst, or nil, counting it as used.
func (m *manifestMemory) get(dgst digest.Digest) *manifestEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.use(dgst)
}

// use returns the entry of dgst, or nil when there is none or it is
// stale (then dropped); under mu.
func (m *manifestMemory) use(dgst digest.Digest) *manifestEntry {
	e, ok := m.manifests[dgst]
	if !ok {
		return nil
	}
	now := m.now()
	if m.idle > 0 && now.Sub(e.used) >= m.idle {
		delete(m.manifests, dgst)
		m.size -= len(e.payload)
		return nil
	}
	e.used = now
	return e
}

// put keeps e (nil: nothing).
func (m *manifestMemory) put(e *manifestEntry) {
	if e == nil || len(e.payload) > maxMemoryManifest {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.use(e.digest) != nil {
		return
	}
	e.used = m.now()
	for d, old := range m.manifests {
		if m.size+len(e.payload) <= maxMemoryBytes && len(m.manifests) < maxMemoryManifests {
			break
		}
		delete(m.manifests, d)
		m.size -= len(old.payload)
	}
	m.manifests[e.digest] = e
	m.size += len(e.payload)
}

// tagged returns the entry of the digest tag of repo last resolved to, or
// nil when either is unknown.
func (m *manifestMemory) tagged(repo ident.Key, tag string) *manifestEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.tags[tagKey{repo, tag}]
	if !ok {
		return nil
	}
	return m.use(d)
}

// knowsTag reports whether the origin resolved tag of repo for this
// process before (and the memory has not dropped it since).
func (m *manifestMemory) knowsTag(repo ident.Key, tag string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.tags[tagKey{repo, tag}]
	return ok
}

// resolved records that the origin just resolved tag of repo to dgst.
func (m *manifestMemory) resolved(repo ident.Key, tag string, dgst digest.Digest) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := tagKey{repo, tag}
	if _, ok := m.tags[k]; !ok && len(m.tags) >= maxMemoryTags {
		clear(m.tags) // only costs one full answer of the origin per tag
	}
	m.tags[k] = dgst
}
