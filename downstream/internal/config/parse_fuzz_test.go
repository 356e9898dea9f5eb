package config

import (
	"strings"
	"testing"
	"time"
)

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
