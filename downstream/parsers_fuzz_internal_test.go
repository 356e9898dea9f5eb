package downstream

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

// The pure parsers, fuzzed against their contracts. The seeds run with
// go test; `go test -fuzz FuzzX ./downstream` explores further.

const fuzzHex = "a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"

// A record path that parses names a valid digest and round-trips.
func FuzzParseRecordPath(f *testing.F) {
	for _, s := range []string{
		pullsRoot + "/sha256/" + fuzzHex + "/library/alpine/_layer",
		pullsRoot + "/sha256/" + fuzzHex + "/org/tags/_manifest",
		pullsRoot + "/sha256/" + fuzzHex + "/_data",
		pullsRoot + "/sha256/" + fuzzHex + "/_layer",
		pullsRoot + "/sha256/nothex/a/_layer",
		pullsRoot + "/sha512/" + fuzzHex + "/a/_layer",
		"/elsewhere/sha256/" + fuzzHex + "/a/_layer",
		pullsRoot + "//",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		k, ok := parseRecordPath(p)
		if !ok {
			return
		}
		if err := k.dgst.Validate(); err != nil {
			t.Fatalf("parseRecordPath(%q) accepted digest %q: %v", p, k.dgst, err)
		}
		if back := k.path(); back != p {
			t.Fatalf("parseRecordPath(%q) = %+v, whose path is %q", p, k, back)
		}
	})
}

// A link path that parses names a valid digest and a repository, and is
// where distribution keeps that link.
func FuzzParseLinkPath(f *testing.F) {
	for _, s := range []string{
		linkDir("library/alpine", digest.Digest("sha256:"+fuzzHex), kindLayer) + "/link",
		linkDir("org/tags", digest.Digest("sha256:"+fuzzHex), kindManifest) + "/link",
		repositoriesRoot + "/a/_layers/sha256/zz/link",
		repositoriesRoot + "/a/_uploads/x/data",
		repositoriesRoot + "//_layers/sha256/" + fuzzHex + "/link",
		"/link",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		k, ok := parseLinkPath(p)
		if !ok {
			return
		}
		if err := k.dgst.Validate(); err != nil {
			t.Fatalf("parseLinkPath(%q) accepted digest %q: %v", p, k.dgst, err)
		}
		if k.kind != kindLayer && k.kind != kindManifest {
			t.Fatalf("parseLinkPath(%q) gave kind %q", p, k.kind)
		}
		if back := linkDir(k.repo, k.dgst, k.kind) + "/link"; back != p {
			t.Fatalf("parseLinkPath(%q) = %+v, whose link is %q", p, k, back)
		}
	})
}
