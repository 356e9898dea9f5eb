package expiry

import (
	"testing"
)

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
		if err := k.Digest.Validate(); err != nil {
			t.Fatalf("parseRecordPath(%q) accepted digest %q: %v", p, k.Digest, err)
		}
		if back := recordPath(k); back != p {
			t.Fatalf("parseRecordPath(%q) = %+v, whose path is %q", p, k, back)
		}
	})
}
