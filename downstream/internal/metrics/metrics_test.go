package metrics

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

func TestStatusClass(t *testing.T) {
	for _, tc := range []struct {
		resp *http.Response
		err  error
		want string
	}{
		{&http.Response{StatusCode: 200}, nil, "2xx"},
		{&http.Response{StatusCode: 206}, nil, "2xx"},
		{&http.Response{StatusCode: 307}, nil, "3xx"},
		{&http.Response{StatusCode: 401}, nil, "4xx"},
		{&http.Response{StatusCode: 503}, nil, "5xx"},
		{nil, errors.New("connection refused"), "error"},
		{&http.Response{StatusCode: 200}, errors.New("both"), "error"},
		{&http.Response{StatusCode: 999}, nil, "error"},
	} {
		if got := StatusClass(tc.resp, tc.err); got != tc.want {
			t.Errorf("statusClass(%v, %v) = %s, want %s", tc.resp, tc.err, got, tc.want)
		}
	}
}

// value returns the sample of name with the given labels, or -1.
func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue next
				}
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

// The collectors record what their methods are given, and a nil *Metrics
// records nothing without failing.
func TestMetricsMethods(t *testing.T) {
	var none *Metrics
	none.Request("blob", ResultHit, 10)
	none.UpstreamBody("blob", 10)
	none.UpstreamRequest("h", "2xx", time.Second)
	none.SetUpstreamUp("h", true)
	none.FillStarted()
	none.FillDone()
	none.Evicted(10)
	none.Decision(DecisionAllowed, SourceCached)

	u, _ := url.Parse("https://registry.example.com:5000")
	m := New([]*url.URL{u})
	if got := value(t, m.reg, "content_cache_upstream_requests_total", map[string]string{"upstream": "registry.example.com:5000", "class": "5xx"}); got != 0 {
		t.Errorf("a configured upstream's series: %v, want 0 before any request", got)
	}
	m.UpstreamRequest("registry.example.com:5000", "2xx", 30*time.Millisecond)
	m.UpstreamRequest("registry.example.com:5000", "2xx", 3*time.Second)
	m.UpstreamRequest("registry.example.com:5000", StatusClassError, time.Second)
	m.Evicted(1000)
	m.Evicted(24)
	m.SetUpstreamUp("registry.example.com:5000", false)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"content_cache_upstream_requests_total", map[string]string{"upstream": "registry.example.com:5000", "class": "2xx"}, 2},
		{"content_cache_upstream_requests_total", map[string]string{"upstream": "registry.example.com:5000", "class": "error"}, 1},
		{"content_cache_upstream_request_duration_seconds", map[string]string{"upstream": "registry.example.com:5000"}, 3},
		{"content_cache_evictions_total", nil, 2},
		{"content_cache_evicted_bytes_total", nil, 1024},
		{"content_cache_upstream_up", map[string]string{"upstream": "registry.example.com:5000"}, 0},
	} {
		if got := value(t, m.reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil || len(problems) != 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

// Two instances in one process: the first one is in the default registry
// until it unregisters, the second one is left out, and nothing panics.
func TestRegisterDefault(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := New(nil), New(nil)
	unregister, err := a.RegisterDefault(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.RegisterDefault(reg); !errors.Is(err, ErrShared) {
		t.Fatalf("second instance: %v, want errMetricsShared", err)
	}
	a.FillStarted()
	if got := value(t, reg, "content_cache_fills_in_flight", nil); got != 1 {
		t.Fatalf("default registry: fills_in_flight %v, want the first instance's 1", got)
	}
	unregister()
	if got := value(t, reg, "content_cache_fills_in_flight", nil); got != -1 {
		t.Fatalf("after unregistering: fills_in_flight %v, want none", got)
	}
	if _, err := b.RegisterDefault(reg); err != nil {
		t.Fatalf("second instance after the first is gone: %v", err)
	}
	if got := value(t, reg, "content_cache_fills_in_flight", nil); got != 0 {
		t.Fatalf("default registry: fills_in_flight %v, want the second instance's 0", got)
	}
}
