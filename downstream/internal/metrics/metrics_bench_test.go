package metrics

import (
	"net/url"
	"testing"
	"time"
)

// The calls the request path makes once per request or round trip: a hit
// (Request), a cached authorization (Decision) and an upstream round trip
// (UpstreamRequest). Compare main's binary with this one's in one run.
func BenchmarkHotPath(b *testing.B) {
	m := New([]*url.URL{{Scheme: "https", Host: "origin.example:443"}})
	b.Run("Request", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Request("", "blob", ResultHit, 4096)
		}
	})
	b.Run("Decision", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.Decision("", DecisionAllowed, SourceCached)
		}
	})
	b.Run("UpstreamRequest", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.UpstreamRequest("origin.example:443", "2xx", time.Millisecond)
		}
	})
	b.Run("UpstreamBody", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m.UpstreamBody("", "manifest", 1024)
		}
	})
}
