package downstream_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/health"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// scrape returns every sample of g as "name{label="value",...}" → value
// (labels in name order; a histogram as its _count and _sum), and checks
// the families with promlint, the Go linter of `promtool check metrics`.
func scrape(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gathering the metrics: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			sort.Strings(labels)
			key := func(suffix string) string {
				if len(labels) == 0 {
					return mf.GetName() + suffix
				}
				return mf.GetName() + suffix + "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			default:
				t.Errorf("%s: unexpected metric type %s", mf.GetName(), mf.GetType())
			}
		}
	}
	return out
}

// nonZero returns the samples of the family name that are not 0.
func nonZero(all map[string]float64, name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range all {
		if (k == name || strings.HasPrefix(k, name+"{")) && v != 0 {
			out[k] = v
		}
	}
	return out
}

func checkSeries(t *testing.T, all map[string]float64, name string, want map[string]float64) {
	t.Helper()
	got := nonZero(all, name)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s = %v, want 0", k, v)
		}
	}
}

// idle waits until the cache has finished every request: its log line and
// metrics are written after the client's last byte.
func idle(t *testing.T, s *regtest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.WaitIdle(ctx); err != nil {
		t.Fatalf("the cache is still serving: %v", err)
	}
}

// readBlob reads a response to its end and checks that it was a 200 with
// the blob.
func readBlob(t *testing.T, resp *http.Response, fake *fakeUpstream) {
	t.Helper()
	defer resp.Body.Close()
	v := fake.dgst.Verifier()
	n, err := io.Copy(v, resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || n != int64(len(fake.blob)) || !v.Verified() {
		t.Fatalf("blob: status %d, %d bytes, %v", resp.StatusCode, n, err)
	}
}

// After a miss, a coalesced request, a hit, a denial, an error and a ping,
// the counters hold exactly these requests.
func TestMetricsCounters(t *testing.T) {
	noLeaks(t)
	fake, srv := newFakeUpstream(t, "slow", 1<<20)
	cache := regtest.StartCache(t, srv.URL, nil)
	host := mustHost(t, srv.URL)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	blobURL := cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String()
	size := float64(len(fake.blob))

	// Nothing yet, but every series a dashboard needs exists at 0.
	all := scrape(t, cache.Cache.Gatherer())
	for _, k := range []string{
		`content_cache_requests_total{kind="blob",registry="` + host + `",result="hit"}`,
		`content_cache_requests_total{kind="manifest",registry="` + host + `",result="miss"}`,
		`content_cache_served_bytes_total{kind="blob",registry="` + host + `",result="coalesced"}`,
		`content_cache_upstream_bytes_total{kind="blob",registry="` + host + `"}`,
		`content_cache_authorization_decisions_total{decision="denied",registry="` + host + `",source="asked"}`,
		`content_cache_fills_in_flight`,
		`content_cache_evictions_total{reason="ttl"}`,
		`content_cache_evictions_total{reason="size"}`,
		`content_cache_evicted_bytes_total{reason="ttl"}`,
		`content_cache_stored_bytes`,
		`content_cache_max_size_bytes`,
	} {
		if v, ok := all[k]; !ok || v != 0 {
			t.Errorf("before any request: %s = %v (present %v), want 0", k, v, ok)
		}
	}

	// A miss: the leader starts the fill, which the upstream holds at half
	// the blob.
	leader, err := blobGETWith(t.Context(), client, blobURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(leader.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	if got := scrape(t, cache.Cache.Gatherer())["content_cache_fills_in_flight"]; got != 1 {
		t.Errorf("during the fill: content_cache_fills_in_flight = %v, want 1", got)
	}
	// Coalesced: the same blob while the fill runs. Its headers come only
	// once it joined the fill.
	joiner, err := blobGETWith(t.Context(), client, blobURL)
	if err != nil {
		t.Fatal(err)
	}
	fake.unblock()
	// The leader's first KiB was read already.
	defer leader.Body.Close()
	if n, err := io.Copy(io.Discard, leader.Body); err != nil || n != int64(len(fake.blob))-1024 {
		t.Fatalf("leader: %d more bytes, %v", n, err)
	}
	readBlob(t, joiner, fake)
	fillsDone(t, cache) // committed after its clients' last byte

	// A hit.
	resp, err := blobGETWith(t.Context(), client, blobURL)
	if err != nil {
		t.Fatal(err)
	}
	readBlob(t, resp, fake)
	// A denial: the origin refuses the repository.
	if status, _, _ := rawGet(t, cache.URL, http.MethodGet, "/v2/private/x/blobs/"+fake.dgst.String(), ""); status != http.StatusUnauthorized {
		t.Fatalf("private blob: %d, want 401", status)
	}
	// An error: the origin has no such manifest.
	if status, _, _ := rawGet(t, cache.URL, http.MethodGet, "/v2/test/blob/manifests/latest", ""); status != http.StatusNotFound {
		t.Fatalf("unknown manifest: %d, want 404", status)
	}
	// The ping, forwarded.
	if status, _, _ := rawGet(t, cache.URL, http.MethodGet, "/v2/", ""); status != http.StatusOK {
		t.Fatalf("ping: %d, want 200", status)
	}
	idle(t, cache)

	all = scrape(t, cache.Cache.Gatherer())
	checkSeries(t, all, "content_cache_requests_total", map[string]float64{
		`content_cache_requests_total{kind="blob",registry="` + host + `",result="miss"}`:      1,
		`content_cache_requests_total{kind="blob",registry="` + host + `",result="coalesced"}`: 1,
		`content_cache_requests_total{kind="blob",registry="` + host + `",result="hit"}`:       1,
		`content_cache_requests_total{kind="blob",registry="` + host + `",result="denied"}`:    1,
		`content_cache_requests_total{kind="manifest",registry="` + host + `",result="error"}`: 1,
		`content_cache_requests_total{kind="base",registry="` + host + `",result="forwarded"}`: 1,
	})
	for _, result := range []string{"miss", "coalesced", "hit"} {
		k := `content_cache_served_bytes_total{kind="blob",registry="` + host + `",result="` + result + `"}`
		if all[k] != size {
			t.Errorf("%s = %v, want the blob's %v", k, all[k], size)
		}
	}
	// The blob came from upstream once, for the miss and the coalesced
	// request together; the ping had an empty body.
	checkSeries(t, all, "content_cache_upstream_bytes_total", map[string]float64{
		`content_cache_upstream_bytes_total{kind="blob",registry="` + host + `"}`: size,
	})
	// The fill's GET allowed the credential (asked); the coalesced request
	// and the hit found that answer (cached); the origin refused private/x.
	checkSeries(t, all, "content_cache_authorization_decisions_total", map[string]float64{
		`content_cache_authorization_decisions_total{decision="allowed",registry="` + host + `",source="asked"}`:  1,
		`content_cache_authorization_decisions_total{decision="allowed",registry="` + host + `",source="cached"}`: 2,
		`content_cache_authorization_decisions_total{decision="denied",registry="` + host + `",source="asked"}`:   1,
	})
	checkSeries(t, all, "content_cache_fills_in_flight", nil)
	if fake.gets.Load() != 1 {
		t.Errorf("upstream saw %d GETs of the blob, want 1", fake.gets.Load())
	}
}

// Upstream round trips are counted by upstream and status class, with their
// latency.
func TestMetricsUpstreamRequests(t *testing.T) {
	fake, srv := newFakeUpstream(t, "ok", 4096)
	cache := regtest.StartCache(t, srv.URL, nil)
	host := mustHost(t, srv.URL)
	resp, err := http.Get(cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	readBlob(t, resp, fake) // GET: 2xx
	if status, _, _ := rawGet(t, cache.URL, http.MethodHead, "/v2/test/blob/manifests/latest", ""); status != http.StatusNotFound {
		t.Fatalf("HEAD unknown manifest: %d, want 404", status) // HEAD: 4xx
	}
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	deadCache := regtest.StartCache(t, dead.URL, nil)
	if status, _, _ := rawGet(t, deadCache.URL, http.MethodGet, "/v2/", ""); status != http.StatusServiceUnavailable {
		t.Fatalf("ping through a dead upstream: %d, want 503", status)
	}
	idle(t, cache)
	idle(t, deadCache)

	all := scrape(t, cache.Cache.Gatherer())
	got := nonZero(all, "content_cache_upstream_requests_total")
	if len(got) == 0 {
		t.Fatal("no upstream round trips counted")
	}
	checkSeries(t, all, "content_cache_upstream_requests_total", map[string]float64{
		`content_cache_upstream_requests_total{class="2xx",upstream="` + host + `"}`: 1,
		`content_cache_upstream_requests_total{class="4xx",upstream="` + host + `"}`: 1,
	})
	if n := all[`content_cache_upstream_request_duration_seconds_count{upstream="`+host+`"}`]; n != 2 {
		t.Errorf("upstream latency histogram holds %v round trips, want 2", n)
	}
	deadHost := mustHost(t, dead.URL)
	checkSeries(t, scrape(t, deadCache.Cache.Gatherer()), "content_cache_upstream_requests_total", map[string]float64{
		`content_cache_upstream_requests_total{class="error",upstream="` + deadHost + `"}`: 1,
	})
}

func mustHost(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// The metrics of each instance are its own, and two instances in one
// process do not clash.
func TestMetricsPerInstance(t *testing.T) {
	fake, srv := newFakeUpstream(t, "ok", 4096)
	a := regtest.StartCache(t, srv.URL, nil)
	b := regtest.StartCache(t, srv.URL, nil)
	resp, err := http.Get(a.URL + "/v2/test/blob/blobs/" + fake.dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	readBlob(t, resp, fake)
	idle(t, a)
	miss := `content_cache_requests_total{kind="blob",registry="` + mustHost(t, srv.URL) + `",result="miss"}`
	if got := scrape(t, a.Cache.Gatherer())[miss]; got != 1 {
		t.Errorf("first cache: %s = %v, want 1", miss, got)
	}
	if got := scrape(t, b.Cache.Gatherer())[miss]; got != 0 {
		t.Errorf("second cache: %s = %v, want 0", miss, got)
	}
}

// healthStatus registers chk in a health registry of its own and returns
// what /debug/health would show.
func healthStatus(t *testing.T, chk *downstream.UpstreamCheck) map[string]string {
	t.Helper()
	reg := health.NewRegistry()
	reg.Register(downstream.HealthCheckName, chk)
	return reg.CheckStatus(t.Context())
}

func TestUpstreamHealth(t *testing.T) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="live"`)
		w.WriteHeader(http.StatusUnauthorized) // an answer: reachable
	}))
	t.Cleanup(live.Close)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(hung.CloseClientConnections)

	for _, tc := range []struct {
		name      string
		upstreams []string
		healthy   bool
	}{
		{"live", []string{live.URL}, true},
		{"dead", []string{dead.URL}, false},
		{"hung", []string{hung.URL}, false},
		{"dead and hung", []string{dead.URL, hung.URL}, false},
		{"dead then live", []string{dead.URL, live.URL}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ups []any
			for _, u := range tc.upstreams {
				ups = append(ups, u)
			}
			cache := regtest.StartCache(t, tc.upstreams[0], map[string]any{"upstreams": ups})
			chk := cache.Cache.NewUpstreamCheck(200 * time.Millisecond)
			if st := healthStatus(t, chk); len(st) != 0 {
				t.Fatalf("before the first probe: %v, want healthy", st)
			}
			err := chk.Probe(t.Context())
			st := healthStatus(t, chk)
			if tc.healthy {
				if err != nil || len(st) != 0 {
					t.Fatalf("probe: %v, status %v, want healthy", err, st)
				}
			} else {
				msg := st[downstream.HealthCheckName]
				if err == nil || msg != err.Error() || !strings.HasPrefix(msg, "no upstream is reachable: ") {
					t.Fatalf("probe: %v, status %v, want %q failing", err, st, downstream.HealthCheckName)
				}
				for _, u := range tc.upstreams {
					if !strings.Contains(msg, mustHost(t, u)) {
						t.Errorf("status %q does not name %s", msg, mustHost(t, u))
					}
				}
			}
			all := scrape(t, cache.Cache.Gatherer())
			for _, u := range tc.upstreams {
				want := 0.0
				if u == live.URL {
					want = 1
				}
				k := `content_cache_upstream_up{upstream="` + mustHost(t, u) + `"}`
				if v, ok := all[k]; !ok || v != want {
					t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
				}
			}
		})
	}
}

// Poll probes on each tick: the check follows an upstream that goes away.
func TestUpstreamHealthPoll(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(up.Close)
	cache := regtest.StartCache(t, up.URL, nil)
	chk := cache.Cache.NewUpstreamCheck(time.Second)
	ticks := make(chan time.Time)
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		chk.Poll(ctx, ticks)
	}()
	// Poll receives the second tick only after the first probe is done.
	tick := func() {
		ticks <- time.Now()
		ticks <- time.Now()
	}
	tick()
	if st := healthStatus(t, chk); len(st) != 0 {
		t.Fatalf("upstream up: %v, want healthy", st)
	}
	up.CloseClientConnections()
	up.Close()
	// The probe of the last tick may have run before Close; the first
	// probe of this one ran after it, and is done.
	tick()
	if st := healthStatus(t, chk); st[downstream.HealthCheckName] == "" {
		t.Fatalf("upstream gone: %v, want %q failing", st, downstream.HealthCheckName)
	}
	cancel()
	<-stopped
}
