package store

import (
	"errors"
	"path"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"

	"github.com/distribution/reference"

	"github.com/opencontainers/go-digest"
)

// distribution's storage layout, which the cache reads and writes through
// the driver where distribution's API would cost more (a second hash, a
// 4 MiB buffer per read) or cannot reach (a link whose data is gone). The
// layout has been stable since registry v2; distribution's own path specs
// are unexported.
const RepositoriesRoot = "/docker/registry/v2/repositories"

// BlobDataPath is where a blob's data lives.
func BlobDataPath(dgst digest.Digest) string {
	hex := dgst.Encoded()
	return path.Join("/docker/registry/v2/blobs", string(dgst.Algorithm()), hex[:2], hex, "data")
}

// Kind is what a link (or a pull record) keeps alive: a layer link, a
// manifest revision link, or bare data.
type Kind string

const (
	KindLayer    Kind = "_layer"
	KindManifest Kind = "_manifest"
	KindData     Kind = "_data" // data found without a link (pull records only)
)

// Ref names a digest as a repository holds it: a layer, a manifest, or
// (Repo "") bare data.
type Ref struct {
	Digest digest.Digest
	Repo   string // "" for KindData
	Kind   Kind
}

// LinkDir is the directory of a repository's link to a digest: a layer
// link, or a manifest revision link.
func LinkDir(repo string, dgst digest.Digest, k Kind) string {
	sub := "_layers"
	if k == KindManifest {
		sub = "_manifests/revisions"
	}
	return path.Join(RepositoriesRoot, repo, sub, string(dgst.Algorithm()), dgst.Encoded())
}

// UploadDir is an upload directory of a repository, which distribution's
// upload purger removes once its startedat file is old enough.
func UploadDir(repo, id string) string {
	return path.Join(RepositoriesRoot, repo, "_uploads", id)
}

// ParseLinkPath is LinkDir(...)+"/link" reversed, for the record a link
// needs.
func ParseLinkPath(p string) (Ref, bool) {
	rest, ok := strings.CutPrefix(p, RepositoriesRoot+"/")
	if !ok || path.Base(rest) != "link" || path.Clean(p) != p {
		return Ref{}, false
	}
	dir := path.Dir(rest) // <repo>/<kind dirs>/<alg>/<hex>
	hex, alg := path.Base(dir), path.Base(path.Dir(dir))
	dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	if dgst.Validate() != nil {
		return Ref{}, false
	}
	prefix := path.Dir(path.Dir(dir))
	k := Ref{Digest: dgst}
	if repo, ok := strings.CutSuffix(prefix, "/_layers"); ok {
		k.Repo, k.Kind = repo, KindLayer
	} else if repo, ok := strings.CutSuffix(prefix, "/_manifests/revisions"); ok {
		k.Repo, k.Kind = repo, KindManifest
	} else {
		return Ref{}, false
	}
	// Only a repository distribution could have made (FuzzParseLinkPath
	// found an empty one accepted).
	if _, err := reference.WithName(k.Repo); err != nil {
		return Ref{}, false
	}
	return k, true
}

// IsNotFound reports a driver's "no such path".
func IsNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}
