package origin

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Why a blob GET was served by the origin itself rather than redirected.
const (
	directUnassigned  = "unassigned"    // no cache for this user or network
	directUnknown     = "unknown_cache" // assigned to a cache that does not exist (deleted)
	directUnhealthy   = "unhealthy"     // the cache's last probe failed, or it was not probed yet
	directStoreError  = "store_error"   // the user's setting could not be read
	directViaCache    = "via_cache"     // a content cache asked: it is where the bytes go
	metricsNamespace  = "content_cache_origin"
	metricsCacheLabel = "cache"
)

// metrics are one instance's collectors. Every series of a known label
// value starts at zero, so that rates are defined from the start.
type metrics struct {
	redirects *prometheus.CounterVec // cache
	direct    *prometheus.CounterVec // reason
	up        *prometheus.GaugeVec   // cache
}

func newMetrics() *metrics {
	m := &metrics{
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "redirects_total",
			Help: "Blob GETs redirected to a content cache, by cache.",
		}, []string{metricsCacheLabel}),
		direct: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: metricsNamespace, Name: "direct_total",
			Help: "Blob GETs served by the origin itself, by why they were not redirected.",
		}, []string{"reason"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: metricsNamespace, Name: "cache_up",
			Help: "1 if the cache's /v2/ answered the last probe, else 0.",
		}, []string{metricsCacheLabel}),
	}
	for _, r := range []string{directUnassigned, directUnknown, directUnhealthy, directStoreError, directViaCache} {
		m.direct.WithLabelValues(r)
	}
	return m
}

// redirected is the count of blob GETs redirected to cache.
func (m *metrics) redirected(cache string) uint64 {
	var d dto.Metric
	if err := m.redirects.WithLabelValues(cache).Write(&d); err != nil {
		return 0
	}
	return uint64(d.GetCounter().GetValue())
}

// register adds the collectors to r (the default registry in a registry
// process). A second instance in one process (tests) is left out rather
// than failing: its collectors stay readable on the instance.
func (m *metrics) register(r prometheus.Registerer) (unregister func(), err error) {
	cs := []prometheus.Collector{m.redirects, m.direct, m.up}
	for i, c := range cs {
		if err := r.Register(c); err != nil {
			for _, done := range cs[:i] {
				r.Unregister(done)
			}
			var already prometheus.AlreadyRegisteredError
			if errors.As(err, &already) {
				return nil, errors.New("another instance already exports the content_cache_origin_* metrics")
			}
			return nil, err
		}
	}
	return func() {
		for _, c := range cs {
			r.Unregister(c)
		}
	}, nil
}
