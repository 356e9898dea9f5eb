package access

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/ident"

	"github.com/content-cache/content-cache/downstream/internal/metrics"
)

// BenchmarkDecisionLookup is the authorization decision lookup of every
// blob and manifest request, from all CPUs at once over a cache of 10,000
// credential/repository pairs: "hit" finds an allowed answer within
// authttl, "miss" finds none (the request then asks the origin),
// "hash+hit" includes hashing the Authorization header as a request does.
func BenchmarkDecisionLookup(b *testing.B) {
	const pairs = 10_000
	d := NewDecisions(time.Hour, time.Now, metrics.New(nil))
	h := NewHasher()
	creds := make([]Key, pairs)
	headers := make([]string, pairs)
	repos, others := make([]string, pairs), make([]string, pairs)
	for i := range pairs {
		headers[i] = "Bearer token-of-user-" + strconv.Itoa(i)
		creds[i] = h.Key(headers[i])
		repos[i] = "team-" + strconv.Itoa(i%100) + "/app"
		others[i] = "team-" + strconv.Itoa(i%100) + "/other"
		d.Allow(creds[i], ident.Key{Name: repos[i]})
	}
	var next atomic.Uint64
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(7919) % pairs)
			for pb.Next() {
				if !d.IsAllowed(creds[i], ident.Key{Name: repos[i]}) {
					b.Error("allowed pair not found")
					return
				}
				i = (i + 1) % pairs
			}
		})
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(7919) % pairs)
			for pb.Next() {
				if d.IsAllowed(creds[i], ident.Key{Name: others[i]}) {
					b.Error("a pair never allowed was found")
					return
				}
				i = (i + 1) % pairs
			}
		})
	})
	b.Run("hash+hit", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(7919) % pairs)
			for pb.Next() {
				if !d.IsAllowed(h.Key(headers[i]), ident.Key{Name: repos[i]}) {
					b.Error("allowed pair not found")
					return
				}
				i = (i + 1) % pairs
			}
		})
	})
}
