package metrics

import (
	"time"

	gometrics "github.com/docker/go-metrics"
)

// warmSeries are the warm schedule's collectors (docs/warming.md).
type warmSeries struct {
	runs        gometrics.LabeledCounter // result: ok, failed, skipped
	images      gometrics.LabeledCounter // result: warmed, failed
	bytes       gometrics.Counter
	lastSuccess gometrics.Gauge
}

func newWarmSeries(ns *gometrics.Namespace) warmSeries {
	w := warmSeries{
		runs: ns.NewLabeledCounter("warm_runs",
			"Scheduled warm runs (the warm option), by result: ok (every image warmed), failed (one image or more failed), skipped (another replica ran in this interval or runs now).",
			"result"),
		images: ns.NewLabeledCounter("warm_images",
			"Images of scheduled warm runs, by result: warmed or failed.",
			"result"),
		bytes: ns.NewCounter("warm_bytes",
			"Bytes of blobs scheduled warm runs fetched from upstream (blobs already stored are not fetched and not counted)."),
		lastSuccess: ns.NewGauge("warm_last_success_timestamp_seconds",
			"Unix time of the end of the last scheduled warm run in which every image warmed; 0 before the first.",
			gometrics.Unit("")),
	}
	for _, r := range []string{"ok", "failed", "skipped"} {
		w.runs.WithValues(r).Inc(0)
	}
	for _, r := range []string{"warmed", "failed"} {
		w.images.WithValues(r).Inc(0)
	}
	return w
}

// WarmRun counts a scheduled warm run by result.
func (m *Metrics) WarmRun(result string) {
	if m != nil {
		m.warm.runs.WithValues(result).Inc()
	}
}

// WarmImages counts the images of a run.
func (m *Metrics) WarmImages(warmed, failed int) {
	if m != nil {
		m.warm.images.WithValues("warmed").Inc(float64(warmed))
		m.warm.images.WithValues("failed").Inc(float64(failed))
	}
}

// WarmBytes counts bytes a run fetched.
func (m *Metrics) WarmBytes(n int64) {
	if m != nil {
		m.warm.bytes.Inc(float64(n))
	}
}

// WarmSucceeded records the end of a run in which every image warmed.
func (m *Metrics) WarmSucceeded(at time.Time) {
	if m != nil {
		m.warm.lastSuccess.Set(float64(at.UnixNano()) / 1e9)
	}
}
