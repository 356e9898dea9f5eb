package httpapi

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzParseRange checks parseRange against its contract: it accepts only
// one satisfiable "bytes=" range, within the blob, and agrees with a plain
// reading of the header. The seeds run with go test.
func FuzzParseRange(f *testing.F) {
	for _, seed := range []struct {
		h    string
		size int64
	}{
		{"bytes=0-0", 1}, {"bytes=0-", 10}, {"bytes=5-9", 10}, {"bytes=5-100", 10},
		{"bytes=-5", 10}, {"bytes=-0", 10}, {"bytes=-100", 10}, {"bytes=10-", 10},
		{"bytes=9-5", 10}, {"bytes=0-5,7-8", 10}, {"bytes= 1-2 ", 10}, {"bytes=1 - 2", 10},
		{"items=0-1", 10}, {"bytes=", 10}, {"bytes=-", 10}, {"bytes=--1", 10},
		{"bytes=+1-2", 10}, {"bytes=0-0", 0}, {"bytes=-1", 0}, {"bytes=9223372036854775807-", 10},
		{"bytes=0-9223372036854775807", 10}, {"bytes=-9223372036854775807", 10}, {"bytes=1-2", -1},
	} {
		f.Add(seed.h, seed.size)
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		start, end, ok := parseRange(h, size)
		if !ok {
			if start != 0 || end != 0 {
				t.Fatalf("parseRange(%q, %d) = %d, %d, false: want zeros when not ok", h, size, start, end)
			}
			return
		}
		if start < 0 || start >= end || end > size {
			t.Fatalf("parseRange(%q, %d) = [%d, %d): not a satisfiable range within the blob", h, size, start, end)
		}
		spec, found := strings.CutPrefix(h, "bytes=")
		if !found || strings.Contains(spec, ",") {
			t.Fatalf("parseRange(%q, %d) accepted a header that is not one bytes range", h, size)
		}
		a, b, _ := strings.Cut(strings.TrimSpace(spec), "-")
		if a == "" {
			n, err := strconv.ParseInt(b, 10, 64)
			if err != nil || end != size || start != max(size-n, 0) {
				t.Fatalf("parseRange(%q, %d) = [%d, %d): not the last %s bytes", h, size, start, end, b)
			}
			return
		}
		first, err := strconv.ParseInt(a, 10, 64)
		if err != nil || first != start {
			t.Fatalf("parseRange(%q, %d) = [%d, %d): does not start at %q", h, size, start, end, a)
		}
		if b == "" {
			if end != size {
				t.Fatalf("parseRange(%q, %d) = [%d, %d): an open range must end at the size", h, size, start, end)
			}
			return
		}
		last, err := strconv.ParseInt(b, 10, 64)
		if err != nil || end != min(last, size-1)+1 {
			t.Fatalf("parseRange(%q, %d) = [%d, %d): does not end at %q", h, size, start, end, b)
		}
	})
}
