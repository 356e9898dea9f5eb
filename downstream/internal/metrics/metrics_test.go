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
	none.Request("", "blob", ResultHit, 10)
	none.UpstreamBody("", "blob", 10)
	none.UpstreamRequest("h", "2xx", time.Second)
	none.SetUpstreamUp("h", true)
	none.FillStarted()
	none.FillDone()
	none.Evicted("ttl", 10)
	none.SetStoredBytes(1)
	none.SetMaxSize(1)
	none.Decision("", DecisionAllowed, SourceCached)

	u, _ := url.Parse("https://registry.example.com:5000")
	m := New([]*url.URL{u})
	if got := value(t, m.reg, "content_cache_upstream_requests_total", map[string]string{"upstream": "registry.example.com:5000", "class": "5xx"}); got != 0 {
		t.Errorf("a configured upstream's series: %v, want 0 before any request", got)
	}
	m.UpstreamRequest("registry.example.com:5000", "2xx", 30*time.Millisecond)
	m.UpstreamRequest("registry.example.com:5000", "2xx", 3*time.Second)
	m.UpstreamRequest("registry.example.com:5000", StatusClassError, time.Second)
	m.Evicted("ttl", 1000)
	m.Evicted("size", 24)
	m.Evicted("size", 1)
	m.SetStoredBytes(500)
	m.SetMaxSize(600)
	m.SetUpstreamUp("registry.example.com:5000", false)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"content_cache_upstream_requests_total", map[string]string{"upstream": "registry.example.com:5000", "class": "2xx"}, 2},
		{"content_cache_upstream_requests_total", map[string]string{"upstream": "registry.example.com:5000", "class": "error"}, 1},
		{"content_cache_upstream_request_duration_seconds", map[string]string{"upstream": "registry.example.com:5000"}, 3},
		{"content_cache_evictions_total", map[string]string{"reason": "ttl"}, 1},
		{"content_cache_evictions_total", map[string]string{"reason": "size"}, 2},
		{"content_cache_evicted_bytes_total", map[string]string{"reason": "ttl"}, 1000},
		{"content_cache_evicted_bytes_total", map[string]string{"reason": "size"}, 25},
		{"content_cache_stored_bytes", nil, 500},
		{"content_cache_max_size_bytes", nil, 600},
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

// Every series resolved at New counts under its own labels, and values
// outside the fixed sets still count (through a label lookup).
func TestResolvedSeries(t *testing.T) {
	u, _ := url.Parse("https://registry.example.com:5000")
	m := New([]*url.URL{u})
	for i, kind := range requestKinds {
		for j, result := range requestResults {
			if m.regs[""].req[i][j].requests == nil {
				continue
			}
			m.Request("", kind, result, int64(100*i+j+1))
			labels := map[string]string{"registry": "default", "kind": kind, "result": result}
			if got := value(t, m.reg, "content_cache_requests_total", labels); got != 1 {
				t.Errorf("requests%v = %v, want 1", labels, got)
			}
			if got := value(t, m.reg, "content_cache_served_bytes_total", labels); got != float64(100*i+j+1) {
				t.Errorf("served_bytes%v = %v, want %d", labels, got, 100*i+j+1)
			}
		}
		m.UpstreamBody("", kind, int64(i+1))
		if got := value(t, m.reg, "content_cache_upstream_bytes_total", map[string]string{"registry": "default", "kind": kind}); got != float64(i+1) {
			t.Errorf("upstream_bytes{kind=%s} = %v, want %d", kind, got, i+1)
		}
	}
	for i, class := range statusClasses {
		for range i + 1 {
			m.UpstreamRequest(u.Host, class, time.Millisecond)
		}
		if got := value(t, m.reg, "content_cache_upstream_requests_total", map[string]string{"upstream": u.Host, "class": class}); got != float64(i+1) {
			t.Errorf("upstream_requests{class=%s} = %v, want %d", class, got, i+1)
		}
	}
	m.Decision("", DecisionAllowed, SourceCached)
	m.Decision("", DecisionAllowed, SourceAsked)
	m.Decision("", DecisionAllowed, SourceAsked)
	for range 3 {
		m.Decision("", DecisionDenied, SourceAsked)
	}
	for _, tc := range []struct {
		decision, source string
		want             float64
	}{{DecisionAllowed, SourceCached, 1}, {DecisionAllowed, SourceAsked, 2}, {DecisionDenied, SourceAsked, 3}} {
		if got := value(t, m.reg, "content_cache_authorization_decisions_total", map[string]string{"registry": "default", "decision": tc.decision, "source": tc.source}); got != tc.want {
			t.Errorf("decisions{%s,%s} = %v, want %v", tc.decision, tc.source, got, tc.want)
		}
	}
	// Outside the fixed sets: an unconfigured upstream, a result a kind
	// does not start with.
	m.UpstreamRequest("other:443", "2xx", time.Millisecond)
	m.Request("", "tags", ResultHit, 7)
	if got := value(t, m.reg, "content_cache_upstream_requests_total", map[string]string{"upstream": "other:443", "class": "2xx"}); got != 1 {
		t.Errorf("unconfigured upstream: %v, want 1", got)
	}
	if got := value(t, m.reg, "content_cache_served_bytes_total", map[string]string{"registry": "default", "kind": "tags", "result": ResultHit}); got != 7 {
		t.Errorf("tags hit: %v, want 7", got)
	}
}
