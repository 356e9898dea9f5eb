package config

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"1", 1}, {"500GiB", 500 << 30}, {"500 GiB", 500 << 30}, {"1KB", 1000}, {"1kb", 1000},
		{"1KiB", 1024}, {"3MB", 3e6}, {"2MiB", 2 << 20}, {"7GB", 7e9}, {"1TB", 1e12}, {"2TiB", 2 << 40},
		{" 10B ", 10}, {"8388607TiB", 8388607 << 40},
	} {
		got, err := ParseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "GiB", "-1GiB", "1.5GiB", "1GIBB", "1Gi", "1 PB", "8388608TiB", "99999999999999999999"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d; want an error", in, got)
		}
	}
}

// Each bad value of the size bound's options gets one line naming the
// option, the value and what is expected.
func TestSizeBoundConfigErrors(t *testing.T) {
	const (
		size = `expected a size in bytes such as 500GiB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; a bare integer counts bytes) greater than 0`
		wm   = `expected a percentage of maxsize from 1% to 99% such as 90%`
	)
	for _, c := range []struct {
		key  string
		v    any
		want string
	}{
		{"maxsize", "-5GiB", `downstream: option "maxsize": found string "-5GiB", ` + size},
		{"maxsize", -5, `downstream: option "maxsize": found integer -5, ` + size},
		{"maxsize", "500GB5", `downstream: option "maxsize": found string "500GB5", ` + size},
		{"maxsize", "500Gib", ""},
		{"maxsize", "500GiBs", `downstream: option "maxsize": found string "500GiBs", ` + size},
		{"maxsize", "500G", `downstream: option "maxsize": found string "500G", ` + size},
		{"maxsize", 0, `downstream: option "maxsize": found integer 0, ` + size},
		{"maxsize", true, `downstream: option "maxsize": found boolean true, ` + size},
		{"lowwatermark", "100%", `downstream: option "lowwatermark": found string "100%", ` + wm},
		{"lowwatermark", "150%", `downstream: option "lowwatermark": found string "150%", ` + wm},
		{"lowwatermark", "0%", `downstream: option "lowwatermark": found string "0%", ` + wm},
		{"lowwatermark", "-10%", `downstream: option "lowwatermark": found string "-10%", ` + wm},
		{"lowwatermark", "90", `downstream: option "lowwatermark": found string "90", ` + wm},
		{"lowwatermark", 100, `downstream: option "lowwatermark": found integer 100, ` + wm},
		{"lowwatermark", "80%", ""},
		{"lowwatermark", 80, ""},
		{"pin", []any{"base/[a-"}, `downstream: option "pin": "base/[a-" is not a valid glob (syntax error in pattern); expected a list of repository globs such as ["base/*", "library/alpine"] (path.Match syntax: * ? [a-z] within a path component)`},
		{"pin", "base/*", `downstream: option "pin": found string "base/*", expected a list of repository globs such as ["base/*", "library/alpine"] (path.Match syntax: * ? [a-z] within a path component)`},
		{"pin", []any{"base/*", "library/alpine"}, ""},
	} {
		_, err := Parse(map[string]any{"upstreams": []any{"https://o.example"}, c.key: c.v})
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%s: %v\n got %s\nwant %s", c.key, c.v, got, c.want)
		}
		if strings.Contains(got, "\n") {
			t.Errorf("%s: a multi-line error", c.key)
		}
	}
}

func TestPinned(t *testing.T) {
	c, err := Parse(map[string]any{"upstreams": []any{"https://o.example"}, "pin": []any{"base/*", "library/alpine"}})
	if err != nil {
		t.Fatal(err)
	}
	for repo, want := range map[string]bool{"base/app": true, "base/app/sub": false, "library/alpine": true, "library/alpine2": false, "other": false} {
		if c.Pinned(repo) != want {
			t.Errorf("Pinned(%q) = %v; want %v", repo, !want, want)
		}
	}
}

// A size that parses is the number times its unit, never negative, and
// prints back to the same bytes.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"500GiB", "1", "0", "1KB", " 3 MiB ", "1.5GiB", "-1", "9223372036854775807", "9223372036854775808", "8388608TiB", "GiB", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		back, err := ParseSize(strconv.FormatInt(n, 10))
		if err != nil || back != n {
			t.Fatalf("ParseSize(%q) = %d, but %d reads back as %d, %v", s, n, n, back, err)
		}
	})
}
