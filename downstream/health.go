package downstream

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/health"
)

// HealthCheckName is the name of the upstream check in distribution's health
// registry: the key /debug/health shows when every upstream is unreachable.
const HealthCheckName = "downstream_upstreams"

const (
	// DefaultHealthInterval is the time between two probes of the upstreams
	// (distribution's default for its own checks).
	DefaultHealthInterval = 10 * time.Second
	// DefaultHealthTimeout bounds one probe of one upstream.
	DefaultHealthTimeout = 5 * time.Second
)

// UpstreamCheck is the reachability check of a Cache's upstreams, a
// distribution health.Checker. A probe sends GET /v2/ to every upstream at
// once; any HTTP answer, 401 included, means reachable. The check fails
// when, in the last probe, no upstream answered: the cache can then fetch
// nothing, and serves only the hits an "allowed" answer within authttl
// still covers. One upstream down is not a failure (the requests fail
// over); content_cache_upstream_up shows each one.
type UpstreamCheck struct {
	c       *Cache
	timeout time.Duration

	mu   sync.Mutex
	last error // the last probe's result; nil before the first
}

var _ health.Checker = (*UpstreamCheck)(nil)

// NewUpstreamCheck returns the upstream check of c, each probe of an upstream
// bounded by timeout (DefaultHealthTimeout when 0). It probes nothing until
// Probe or Poll.
func (c *Cache) NewUpstreamCheck(timeout time.Duration) *UpstreamCheck {
	if timeout <= 0 {
		timeout = DefaultHealthTimeout
	}
	return &UpstreamCheck{c: c, timeout: timeout}
}

// Check returns the result of the last probe without probing: distribution
// calls it for every request it health-gates, and for /debug/health.
func (u *UpstreamCheck) Check(context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// Probe probes every upstream now, records the result for Check and the
// content_cache_upstream_up gauges, and returns it.
func (u *UpstreamCheck) Probe(ctx context.Context) error {
	hosts := u.c.up.Hosts()
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = u.c.up.Probe(ctx, h, u.timeout)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err // stopped, not a finding about the upstreams
	}
	m := u.c.metrics
	var down []string
	for i, h := range hosts {
		m.SetUpstreamUp(h.Host, errs[i] == nil)
		if errs[i] != nil {
			down = append(down, errs[i].Error())
		}
	}
	var err error
	if len(down) == len(hosts) {
		err = errors.New("no upstream is reachable: " + strings.Join(down, "; "))
	}
	u.mu.Lock()
	u.last = err
	u.mu.Unlock()
	return err
}

// Poll probes on every value of ticks until ctx ends.
func (u *UpstreamCheck) Poll(ctx context.Context, ticks <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			_ = u.Probe(ctx)
		}
	}
}

// RegisterHealthChecks registers the upstream check (HealthCheckName) with
// distribution's health registry r (health.DefaultRegistry when nil, which
// /debug/health serves and which makes distribution answer 503 on the
// paths it serves, / included, while a check fails), then probes at once and
// every interval (DefaultHealthInterval when 0) until ctx ends or the cache
// closes.
//
// Like distribution's App.RegisterHealthChecks, call it once per process for
// the default registry: the health package panics on a second check of the
// same name, and has no way to remove one.
func (c *Cache) RegisterHealthChecks(ctx context.Context, r *health.Registry, interval time.Duration) *UpstreamCheck {
	if r == nil {
		r = health.DefaultRegistry
	}
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	u := c.NewUpstreamCheck(0)
	r.Register(HealthCheckName, u)
	// Polls until ctx ends or the cache closes, whichever comes first.
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	c.bg.Go(func() {
		defer stop()
		defer cancel()
		_ = u.Probe(ctx)
		t := time.NewTicker(interval)
		defer t.Stop()
		u.Poll(ctx, t.C)
	})
	return u
}
