package downstream

import (
	"path"
	"strings"

	"github.com/distribution/reference"

	"github.com/opencontainers/go-digest"
)

// distribution's storage layout, which the cache reads and writes through
// the driver where distribution's API would cost more (a second hash, a
// 4 MiB buffer per read) or cannot reach (a link whose data is gone). The
// layout has been stable since registry v2; distribution's own path specs
// are unexported.
const repositoriesRoot = "/docker/registry/v2/repositories"

// blobDataPath is where a blob's data lives.
func blobDataPath(dgst digest.Digest) string {
	hex := dgst.Encoded()
	return path.Join("/docker/registry/v2/blobs", string(dgst.Algorithm()), hex[:2], hex, "data")
}

// linkDir is the directory of a repository's link to a digest: a layer
// link, or a manifest revision link.
func linkDir(repo string, dgst digest.Digest, k kind) string {
	sub := "_layers"
	if k == kindManifest {
		sub = "_manifests/revisions"
	}
	return path.Join(repositoriesRoot, repo, sub, string(dgst.Algorithm()), dgst.Encoded())
}

// uploadDir is an upload directory of a repository, which distribution's
// upload purger removes once its startedat file is old enough.
func uploadDir(repo, id string) string {
	return path.Join(repositoriesRoot, repo, "_uploads", id)
}

// parseLinkPath is linkDir(...)+"/link" reversed, for the record a link
// needs.
func parseLinkPath(p string) (pullKey, bool) {
	rest, ok := strings.CutPrefix(p, repositoriesRoot+"/")
	if !ok || path.Base(rest) != "link" || path.Clean(p) != p {
		return pullKey{}, false
	}
	dir := path.Dir(rest) // <repo>/<kind dirs>/<alg>/<hex>
	hex, alg := path.Base(dir), path.Base(path.Dir(dir))
	dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
	if dgst.Validate() != nil {
		return pullKey{}, false
	}
	prefix := path.Dir(path.Dir(dir))
	k := pullKey{dgst: dgst}
	if repo, ok := strings.CutSuffix(prefix, "/_layers"); ok {
		k.repo, k.kind = repo, kindLayer
	} else if repo, ok := strings.CutSuffix(prefix, "/_manifests/revisions"); ok {
		k.repo, k.kind = repo, kindManifest
	} else {
		return pullKey{}, false
	}
	// Only a repository distribution could have made (FuzzParseLinkPath
	// found an empty one accepted).
	if _, err := reference.WithName(k.repo); err != nil {
		return pullKey{}, false
	}
	return k, true
}
