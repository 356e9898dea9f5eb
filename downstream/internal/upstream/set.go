package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/sirupsen/logrus"

	"time"

	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
)

// Set is the upstream pools of every registry a cache serves, by the name
// ident gives their repositories' origin ("" for the default registry).
// A request goes only to the pool of the registry it names: a name not
// configured has no pool, and For answers nil rather than another one.
type Set struct {
	pools map[string]*Pool
	regs  []config.Registry
	via   string
}

// NewSet builds the pools of cfg's registries, sharing one Via token.
func NewSet(cfg config.Config, now func() time.Time, log *logrus.Entry, m *metrics.Metrics) (*Set, error) {
	s := &Set{pools: map[string]*Pool{}, via: NewVia(), regs: cfg.All()}
	for _, r := range s.regs {
		l := log
		if r.Name != "" {
			l = log.WithField("registry", r.Name)
		}
		p, err := New(r, s.via, now, l, m)
		if err != nil {
			for _, q := range s.pools {
				q.Close()
			}
			return nil, err
		}
		s.pools[r.Name] = p
	}
	return s, nil
}

// For is the pool of the registry named origin; nil if none is configured.
func (s *Set) For(origin string) *Pool { return s.pools[origin] }

// Default is the default registry's pool.
func (s *Set) Default() *Pool { return s.pools[""] }

// Registries are the registries, the default one first.
func (s *Set) Registries() []config.Registry { return s.regs }

// Hosts is every upstream of every registry, each once, in order.
func (s *Set) Hosts() []*url.URL {
	var out []*url.URL
	seen := map[string]bool{}
	for _, r := range s.regs {
		for _, h := range s.pools[r.Name].Hosts() {
			if !seen[h.String()] {
				seen[h.String()] = true
				out = append(out, h)
			}
		}
	}
	return out
}

// Via is this instance's token in the Via header.
func (s *Set) Via() string { return s.via }

// Looped reports whether a client request already passed this cache.
func (s *Set) Looped(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		if strings.Contains(strings.ToLower(v), strings.ToLower(s.via)) {
			return true
		}
	}
	return false
}

// Close releases every pool's idle connections.
func (s *Set) Close() {
	for _, p := range s.pools {
		p.Close()
	}
}

// Probe probes h with the pool it belongs to (its registry's TLS roots).
func (s *Set) Probe(ctx context.Context, h *url.URL, timeout time.Duration) error {
	for _, r := range s.regs {
		p := s.pools[r.Name]
		for _, x := range p.Hosts() {
			if x.String() == h.String() {
				return p.Probe(ctx, h, timeout)
			}
		}
	}
	return s.Default().Probe(ctx, h, timeout)
}

// Do sends req to the upstreams of the registry named origin (Pool.Do),
// never to another registry's: an origin with no pool is an error.
func (s *Set) Do(ctx context.Context, origin string, req Request) (*Response, error) {
	p := s.pools[origin]
	if p == nil {
		return nil, &UpstreamError{Host: origin, Err: errors.New("no such registry is configured")}
	}
	return p.Do(ctx, req)
}

// MarkDown skips h of the registry named origin for its backoff period.
func (s *Set) MarkDown(origin string, h *url.URL, err error) {
	if p := s.pools[origin]; p != nil {
		p.MarkDown(h, err)
	}
}
