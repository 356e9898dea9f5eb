package store

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

const fuzzHex = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"

// A link path that parses names a valid digest and a repository, and is
// where distribution keeps that link.
func FuzzParseLinkPath(f *testing.F) {
	for _, s := range []string{
		LinkDir("library/alpine", digest.Digest("sha256:"+fuzzHex), KindLayer) + "/link",
		LinkDir("org/tags", digest.Digest("sha256:"+fuzzHex), KindManifest) + "/link",
		RepositoriesRoot + "/a/_layers/sha256/zz/link",
		RepositoriesRoot + "/a/_uploads/x/data",
		RepositoriesRoot + "//_layers/sha256/" + fuzzHex + "/link",
		"/link",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		k, ok := ParseLinkPath(p)
		if !ok {
			return
		}
		if err := k.Digest.Validate(); err != nil {
			t.Fatalf("ParseLinkPath(%q) accepted digest %q: %v", p, k.Digest, err)
		}
		if k.Kind != KindLayer && k.Kind != KindManifest {
			t.Fatalf("ParseLinkPath(%q) gave kind %q", p, k.Kind)
		}
		if back := LinkDir(k.Repo, k.Digest, k.Kind) + "/link"; back != p {
			t.Fatalf("ParseLinkPath(%q) = %+v, whose link is %q", p, k, back)
		}
	})
}
