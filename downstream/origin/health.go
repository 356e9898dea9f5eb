package origin

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"
)

// Probe reloads the caches created through the API and asks each cache's
// /v2/ whether it is there: any HTTP answer (401 included) means alive, a
// connection error or a timeout means dead. Until its first probe a cache
// counts as dead, so the origin never redirects to a cache nobody checked.
// The background prober calls it every probeinterval; tests call it by hand.
func (o *Origin) Probe(ctx context.Context) {
	if err := o.refresh(ctx); err != nil {
		o.log.WithError(err).Warn("reloading the content caches; keeping the previous list")
	}
	list := o.caches()
	results := make([]bool, len(list))
	var wg sync.WaitGroup
	for i, c := range list {
		wg.Go(func() { results[i] = o.probe(ctx, c.Host) })
	}
	wg.Wait()
	healthy := make(map[string]bool, len(list))
	for i, c := range list {
		healthy[c.Name] = results[i]
		up := 0.0
		if results[i] {
			up = 1
		}
		o.metrics.up.WithLabelValues(c.Name).Set(up)
	}
	o.mu.Lock()
	for name, was := range o.healthy {
		if now, known := healthy[name]; known && now != was {
			o.log.WithField("cache", name).WithField("healthy", now).Info("content cache health changed")
		}
		if _, known := healthy[name]; !known {
			o.metrics.up.DeleteLabelValues(name)
		}
	}
	o.healthy = healthy
	at := o.now()
	o.probedAt = make(map[string]time.Time, len(list))
	for _, c := range list {
		o.probedAt[c.Name] = at
	}
	o.mu.Unlock()
}

func (o *Origin) probe(ctx context.Context, host string) bool {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+"/v2/", nil)
	if err != nil {
		return false
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	return true
}

// healthy reports whether the cache answered its last probe.
func (o *Origin) isHealthy(name string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.healthy[name]
}

// probeLoop probes at once, then every ProbeInterval and whenever the API
// adds a cache, until ctx ends.
func (o *Origin) probeLoop(ctx context.Context) {
	defer close(o.done)
	t := time.NewTicker(o.cfg.ProbeInterval)
	defer t.Stop()
	for {
		o.Probe(ctx)
		if o.afterProbe != nil {
			o.afterProbe()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-o.kick:
		}
	}
}

// probeSoon asks the prober for a round without waiting for it.
func (o *Origin) probeSoon() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}
