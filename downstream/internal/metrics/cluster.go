package metrics

import gometrics "github.com/docker/go-metrics"

// newClusterMetrics makes the replicas' series. They exist (at zero) on a
// single node too, so that dashboards need no special case.
func (m *Metrics) newClusterMetrics(ns *gometrics.Namespace) {
	m.fillsLed = ns.NewCounter("fills_led",
		"Blob fills this replica fetched from upstream while holding the cluster-wide fill lease (with the redis option).")
	m.fillsFollowed = ns.NewCounter("fills_followed",
		"Blob fills this replica streamed from the replica holding the fill lease instead of fetching them from upstream.")
	m.leaseTakeovers = ns.NewCounter("lease_takeovers",
		"Fill leases this replica acquired after the previous holder could not be streamed from (it died, stalled or lost its lease).")
	m.redisErrors = ns.NewCounter("redis_errors",
		"Failed calls to Redis (timeouts, refused connections, errors).")
	m.clusterFallback = ns.NewGauge("cluster_fallback",
		"1 while Redis is unreachable and this replica works alone (its own coalescing and in-use holds, no sweep), 0 otherwise.",
		gometrics.Unit(""))
}

// FillLed counts a fill led under the cluster-wide lease.
func (m *Metrics) FillLed() {
	if m != nil {
		m.fillsLed.Inc()
	}
}

// FillFollowed counts a fill streamed from another replica.
func (m *Metrics) FillFollowed() {
	if m != nil {
		m.fillsFollowed.Inc()
	}
}

// LeaseTakeover counts a fill lease taken over from a holder that failed.
func (m *Metrics) LeaseTakeover() {
	if m != nil {
		m.leaseTakeovers.Inc()
	}
}

// RedisError counts a failed Redis call.
func (m *Metrics) RedisError() {
	if m != nil {
		m.redisErrors.Inc()
	}
}

// SetClusterFallback sets whether this replica works alone for want of
// Redis.
func (m *Metrics) SetClusterFallback(alone bool) {
	if m == nil {
		return
	}
	v := 0.0
	if alone {
		v = 1
	}
	m.clusterFallback.Set(v)
}
