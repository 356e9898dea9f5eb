package downstream

import (
	"strings"
	"testing"
	"time"

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

// An upstream URL that parses is only scheme://host[:port], lower-cased,
// and never carries user information; a refusal never echoes a password.
func FuzzParseUpstreamURL(f *testing.F) {
	for _, s := range []string{
		"https://registry.example.com", "http://127.0.0.1:5000", "https://h:443/", " https://H ",
		"https://user:secret@h", "ftp://h", "https://h/path", "https://h?q", "https://h#f",
		"https://h:0", "https://h:65536", "https://[::1]:5000", "https://", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := parseUpstreamURL("upstreams", raw)
		if err != nil {
			if strings.Contains(raw, "secret@") && strings.Contains(err.Error(), "secret") {
				t.Fatalf("parseUpstreamURL(%q) echoed the password: %v", raw, err)
			}
			return
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
			t.Fatalf("parseUpstreamURL(%q) = %#v", raw, u)
		}
		if u.Host != strings.ToLower(u.Host) {
			t.Fatalf("parseUpstreamURL(%q) kept case in %q", raw, u.Host)
		}
	})
}

// A duration that parses is positive (or zero where allowed), and an
// error names the option.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"24h", "1h30m", "0", "86400000000000", "-1s", "1d", "1µs", " 5m ", "", "9223372036854775807", "9223372036854775808"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, allowZero bool) {
		d, err := parseDuration("blobttl", s, allowZero)
		if err != nil {
			if !strings.HasPrefix(err.Error(), `downstream: option "blobttl": found `) {
				t.Fatalf("parseDuration(%q) error %q does not name the option", s, err)
			}
			return
		}
		if d < 0 || d == 0 && !allowZero {
			t.Fatalf("parseDuration(%q, %v) = %v", s, allowZero, d)
		}
		if n, perr := time.ParseDuration(strings.TrimSpace(s)); perr == nil && n != d {
			t.Fatalf("parseDuration(%q) = %v, time.ParseDuration says %v", s, d, n)
		}
	})
}
