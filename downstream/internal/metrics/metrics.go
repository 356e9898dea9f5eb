package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	gometrics "github.com/docker/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric of the cache: content_cache_*.
const Namespace = "content_cache"

// KindReferrers is the request kind of the OCI referrers API, which
// distribution's router (whose route names are the other kinds) lacks.
const KindReferrers = "referrers"

// Results of a request, as logged and counted (content_cache_requests_total).
const (
	ResultHit       = "hit"       // served from local storage
	ResultMiss      = "miss"      // fetched from upstream by this request
	ResultCoalesced = "coalesced" // streamed from a fill another request started
	ResultDenied    = "denied"    // the upstream refused the credential
	ResultForwarded = "forwarded" // answered by the upstream (ping, tags, catalog, HEAD)
	ResultError     = "error"
	ResultStale     = "stale" // served from local storage while no upstream answered (offlinegrace)
)

// Label values of the authorization decisions.
const (
	DecisionAllowed = "allowed" // the origin allowed the credential for the repository
	DecisionDenied  = "denied"  // the origin refused it (401 or 403)
	SourceCached    = "cached"  // answered by the decision cache (authttl)
	SourceAsked     = "asked"   // answered by the origin just now
)

// StatusClassError is the status class of an upstream round trip that got no
// HTTP answer (refused, reset, timed out ...).
const StatusClassError = "error"

// StatusClass is the class ("2xx" ... "5xx", or "error") of an upstream round
// trip, for UpstreamRequest.
func StatusClass(resp *http.Response, err error) string {
	if err != nil || resp == nil || resp.StatusCode < 100 || resp.StatusCode > 599 {
		return StatusClassError
	}
	return fmt.Sprintf("%dxx", resp.StatusCode/100)
}

// upstreamLatencyBuckets are the buckets of the upstream latency histogram
// (seconds to the response headers): distribution's own HTTP buckets, up to
// the default header timeout.
var upstreamLatencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Metrics are the Prometheus collectors of one cache instance. They belong to the
// instance: there is no package-level metric state.
//
// Registration. The collectors live in a go-metrics Namespace (as
// distribution's own do), which is registered twice:
//
//   - in a Prometheus registry created with the instance and owned by it:
//     Gatherer reads this instance's values and nothing else,
//     however many caches the process runs (tests, embedders);
//   - in Prometheus' default registry, as distribution registers its own
//     namespaces (metrics.Register), so that content_cache_* is served next
//     to registry_* where http.debug.prometheus serves them. The registry
//     middleware does this for as long as the app that built the instance
//     lives (RegisterDefault, called by initMiddleware). A registry
//     process builds one instance. Should a process build two at once
//     (tests do), their names would clash: the second one is then left out
//     of the default registry (and says so in the log) rather than told
//     apart by a label that would mean nothing to an operator of the one
//     cache a registry runs, and stays readable through its own Gatherer.
//     Nothing panics on a duplicate.
//
// Every method is safe on a nil *Metrics, which records nothing.
type Metrics struct {
	ns  *gometrics.Namespace
	reg *prometheus.Registry // this instance's collectors only

	requests      gometrics.LabeledCounter // registry, kind, result
	servedBytes   gometrics.LabeledCounter // registry, kind, result
	upstreamBytes gometrics.LabeledCounter // registry, kind
	upstreamReqs  gometrics.LabeledCounter // upstream, class
	upstreamTime  gometrics.LabeledTimer   // upstream
	upstreamUp    gometrics.LabeledGauge   // upstream
	fillsInFlight gometrics.Gauge
	evictions     gometrics.LabeledCounter // reason
	evictedBytes  gometrics.LabeledCounter // reason
	storedBytes   gometrics.Gauge
	maxSize       gometrics.Gauge
	decisions     gometrics.LabeledCounter // registry, decision, source
	// Replicas (the redis option): see cluster.go.
	fillsLed, fillsFollowed, leaseTakeovers, redisErrors gometrics.Counter
	clusterFallback                                      gometrics.Gauge
	warm                                                 warmSeries // the warm schedule (warm.go)

	// The series of the fixed label values, resolved at New: a label
	// lookup (WithValues) costs 100-500 ns and allocates, on every request.
	// Values outside these sets still go through WithValues.
	regs      map[string]*registrySeries // by ident's origin ("" the default registry); read-only after New
	upstreams map[string]*upstreamSeries // by host:port; read-only after New
}

// registrySeries are the series of one registry: the registry label's
// values are the configured registries only (and "unknown" for requests
// naming none), so that clients cannot grow the series.
type registrySeries struct {
	label        string
	req          [len(requestKinds)][len(requestResults)]series
	upBody       [len(requestKinds)]gometrics.Counter
	allowedCache gometrics.Counter
	allowedAsked gometrics.Counter
	deniedAsked  gometrics.Counter
}

// UnknownRegistry is the registry label of requests whose ns names no
// configured registry.
const UnknownRegistry = "unknown"

// Option configures New.
type Option func(*options)

type options struct{ registries map[string]string }

// WithRegistries labels the series of each registry: by ident's origin
// ("" the default registry), the value of the registry label. Without it
// there is one registry, labelled "default".
func WithRegistries(labels map[string]string) Option {
	return func(o *options) { o.registries = labels }
}

// series are the counters of one kind and result.
type series struct{ requests, bytes gometrics.Counter }

// upstreamSeries are the series of one upstream.
type upstreamSeries struct {
	reqs [len(statusClasses)]gometrics.Counter
	time gometrics.Timer
}

// Request kinds: the routes the cache serves (distribution's route names).
var requestKinds = [...]string{v2.RouteNameBlob, v2.RouteNameManifest, v2.RouteNameTags, v2.RouteNameCatalog, v2.RouteNameBase, KindReferrers}

// requestResults are the results a request ends with.
var requestResults = [...]string{ResultHit, ResultMiss, ResultCoalesced, ResultDenied, ResultForwarded, ResultError, ResultStale}

// statusClasses are the classes of an upstream round trip.
var statusClasses = [...]string{"2xx", "3xx", "4xx", "5xx", StatusClassError}

// kindIndex is kind's index in requestKinds, or -1.
func kindIndex(kind string) int {
	switch kind {
	case v2.RouteNameBlob:
		return 0
	case v2.RouteNameManifest:
		return 1
	case v2.RouteNameTags:
		return 2
	case v2.RouteNameCatalog:
		return 3
	case v2.RouteNameBase:
		return 4
	case KindReferrers:
		return 5
	}
	return -1
}

// resultIndex is result's index in requestResults, or -1.
func resultIndex(result string) int {
	switch result {
	case ResultHit:
		return 0
	case ResultMiss:
		return 1
	case ResultCoalesced:
		return 2
	case ResultDenied:
		return 3
	case ResultForwarded:
		return 4
	case ResultError:
		return 5
	case ResultStale:
		return 6
	}
	return -1
}

// classIndex is class's index in statusClasses, or -1.
func classIndex(class string) int {
	switch class {
	case "2xx":
		return 0
	case "3xx":
		return 1
	case "4xx":
		return 2
	case "5xx":
		return 3
	case StatusClassError:
		return 4
	}
	return -1
}

// New builds the collectors of one instance for the given upstreams
// (their series start at zero, so that rates are defined from the start).
func New(hosts []*url.URL, opts ...Option) *Metrics {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.registries == nil {
		o.registries = map[string]string{"": "default"}
	}
	ns := gometrics.NewNamespace(Namespace, "", nil)
	m := &Metrics{
		ns: ns,
		requests: ns.NewLabeledCounter("requests",
			"Requests answered by the cache, by kind (blob, manifest, tags, catalog, base, referrers) and result: hit (from local storage), miss (fetched from upstream for this request), coalesced (streamed from a fetch another request started), forwarded (the upstream's answer passed on), denied (the origin refused the credential), stale (served from local storage while no upstream answered, under offlinegrace) or error. Refused writes are not counted.",
			"registry", "kind", "result"),
		servedBytes: ns.NewLabeledCounter("served_bytes",
			"Bytes of response bodies sent to clients, by registry, kind and result. The hit and coalesced results are bytes the upstreams did not send again.",
			"registry", "kind", "result"),
		upstreamBytes: ns.NewLabeledCounter("upstream_bytes",
			"Bytes of bodies received from upstreams, by kind: blob fills (counted as they arrive, verified or not), manifests, and the answers passed on (tag lists, catalog, referrers, ping), by registry.",
			"registry", "kind"),
		upstreamReqs: ns.NewLabeledCounter("upstream_requests",
			"Round trips to upstreams, by upstream (host:port) and class of the answer's status: 2xx, 3xx, 4xx, 5xx, or error when no answer came (refused, reset, timed out).",
			"upstream", "class"),
		upstreamTime: ns.NewLabeledTimerWithBuckets("upstream_request_duration",
			"Time from sending an upstream request to its response headers (or its failure), by upstream.",
			upstreamLatencyBuckets, "upstream"),
		upstreamUp: ns.NewLabeledGauge("upstream_up",
			"Whether the last health probe (GET /v2/) of the upstream got an HTTP answer: 1 reachable, 0 not. Absent until the first probe.",
			gometrics.Unit(""), "upstream"),
		fillsInFlight: ns.NewGauge("fills_in_flight",
			"Blob fetches from upstream in progress. Each is shared by every request for the blob.",
			gometrics.Unit("")),
		evictions: ns.NewLabeledCounter("evictions",
			"Digests (blobs and manifests) deleted, data and links, by reason: ttl (nobody pulled them for blobttl) or size (least recently pulled, once stored data passed maxsize).",
			"reason"),
		evictedBytes: ns.NewLabeledCounter("evicted_bytes",
			"Bytes freed by deletions, by reason (ttl, size).",
			"reason"),
		storedBytes: ns.NewGauge("stored_bytes",
			"Bytes of blob and manifest data in storage, as the size bound's index counts them (0 without maxsize).",
			gometrics.Unit("")),
		maxSize: ns.NewGauge("max_size_bytes",
			"The size bound (maxsize) in bytes; 0 without one.",
			gometrics.Unit("")),
		decisions: ns.NewLabeledCounter("authorization_decisions",
			"Authorizations of a credential for a repository (blobs and manifests), by decision (allowed, denied) and source: cached (an allowed answer of the origin within authttl) or asked (the origin's answer just now). Denials are never cached.",
			"registry", "decision", "source"),
	}
	m.newClusterMetrics(ns)
	m.warm = newWarmSeries(ns)
	m.regs = make(map[string]*registrySeries, len(o.registries))
	for origin, label := range o.registries {
		m.regs[origin] = m.newRegistrySeries(label)
	}
	m.upstreams = make(map[string]*upstreamSeries, len(hosts))
	for _, h := range hosts {
		us := &upstreamSeries{time: m.upstreamTime.WithValues(h.Host)}
		for i, class := range statusClasses {
			us.reqs[i] = m.upstreamReqs.WithValues(h.Host, class)
			us.reqs[i].Inc(0)
		}
		m.upstreams[h.Host] = us
	}

	for _, reason := range []string{"ttl", "size"} {
		m.evictions.WithValues(reason).Inc(0)
		m.evictedBytes.WithValues(reason).Inc(0)
	}
	// A pedantic registry checks that what is collected matches what is
	// described. Registering a fresh namespace in a fresh registry fails
	// only on a programming error here.
	m.reg = prometheus.NewPedanticRegistry()
	m.reg.MustRegister(ns)
	return m
}

// newRegistrySeries resolves (and exports at zero) the series of one
// registry label.
func (m *Metrics) newRegistrySeries(label string) *registrySeries {
	rs := &registrySeries{label: label}
	for i, kind := range requestKinds {
		// Resolving a series creates it: only the combinations that
		// happen are exported (at zero from the start), as before.
		results := []string{ResultForwarded, ResultDenied, ResultError}
		switch kind {
		case v2.RouteNameBlob:
			results = append(results, ResultHit, ResultMiss, ResultCoalesced, ResultStale)
		case v2.RouteNameManifest:
			results = append(results, ResultHit, ResultMiss, ResultStale)
		case v2.RouteNameBase:
			results = append(results, ResultStale)
		}
		for _, result := range results {
			sr := series{requests: m.requests.WithValues(label, kind, result), bytes: m.servedBytes.WithValues(label, kind, result)}
			sr.requests.Inc(0)
			sr.bytes.Inc(0)
			rs.req[i][resultIndex(result)] = sr
		}
		rs.upBody[i] = m.upstreamBytes.WithValues(label, kind)
		rs.upBody[i].Inc(0)
	}
	rs.allowedCache = m.decisions.WithValues(label, DecisionAllowed, SourceCached)
	rs.allowedAsked = m.decisions.WithValues(label, DecisionAllowed, SourceAsked)
	rs.deniedAsked = m.decisions.WithValues(label, DecisionDenied, SourceAsked)
	rs.allowedCache.Inc(0)
	rs.allowedAsked.Inc(0)
	rs.deniedAsked.Inc(0)
	return rs
}

// ErrShared reports a second instance in one process: its metrics are
// left out of the default registry.
var ErrShared = errors.New("another content cache of this process already exports the " + Namespace + "_* metrics in the default Prometheus registry; this instance's are only in its own Gatherer")

// RegisterDefault registers the instance's collectors with r (the default
// Prometheus registry, in a registry process); unregister undoes it.
func (m *Metrics) RegisterDefault(r prometheus.Registerer) (unregister func(), err error) {
	if m == nil {
		return func() {}, nil
	}
	if err := r.Register(m.ns); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			return nil, ErrShared
		}
		return nil, fmt.Errorf("registering the %s_* metrics: %w", Namespace, err)
	}
	return func() { r.Unregister(m.ns) }, nil
}

// registry is the series of the registry named origin (ident's origin),
// and its label: UnknownRegistry, with nil series, for an origin not
// configured (a request whose ns names no registry of the cache).
func (m *Metrics) registry(origin string) (*registrySeries, string) {
	if rs := m.regs[origin]; rs != nil {
		return rs, rs.label
	}
	return nil, UnknownRegistry
}

// Request counts one answered request of the registry named origin and
// its body bytes.
func (m *Metrics) Request(origin, kind, result string, bytes int64) {
	if m == nil {
		return
	}
	rs, label := m.registry(origin)
	if k, r := kindIndex(kind), resultIndex(result); rs != nil && k >= 0 && r >= 0 && rs.req[k][r].requests != nil {
		rs.req[k][r].requests.Inc()
		rs.req[k][r].bytes.Inc(float64(bytes))
		return
	}
	m.requests.WithValues(label, kind, result).Inc()
	m.servedBytes.WithValues(label, kind, result).Inc(float64(bytes))
}

// UpstreamBody counts bytes of a body received from an upstream of the
// registry named origin.
func (m *Metrics) UpstreamBody(origin, kind string, bytes int64) {
	if m == nil || bytes <= 0 {
		return
	}
	rs, label := m.registry(origin)
	if k := kindIndex(kind); rs != nil && k >= 0 {
		rs.upBody[k].Inc(float64(bytes))
		return
	}
	m.upstreamBytes.WithValues(label, kind).Inc(float64(bytes))
}

// UpstreamRequest records one upstream round trip: its upstream (the URL's
// host:port), its status class (StatusClass) and the time to its response
// headers or its failure.
func (m *Metrics) UpstreamRequest(host, class string, d time.Duration) {
	if m == nil {
		return
	}
	if us, c := m.upstreams[host], classIndex(class); us != nil && c >= 0 {
		us.reqs[c].Inc()
		us.time.Update(d)
		return
	}
	m.upstreamReqs.WithValues(host, class).Inc()
	m.upstreamTime.WithValues(host).Update(d)
}

// SetUpstreamUp records whether an upstream is reachable.
func (m *Metrics) SetUpstreamUp(host string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.upstreamUp.WithValues(host).Set(v)
}

// FillStarted and FillDone bracket one blob fetch.
func (m *Metrics) FillStarted() {
	if m != nil {
		m.fillsInFlight.Inc()
	}
}

func (m *Metrics) FillDone() {
	if m != nil {
		m.fillsInFlight.Dec()
	}
}

// Evicted counts one digest (blob or manifest) deleted by expiry and the
// bytes of data it freed.
func (m *Metrics) Evicted(reason string, bytes int64) {
	if m == nil {
		return
	}
	m.evictions.WithValues(reason).Inc()
	m.evictedBytes.WithValues(reason).Inc(float64(bytes))
}

// SetStoredBytes records the bytes stored, as the size index counts them.
func (m *Metrics) SetStoredBytes(n int64) {
	if m != nil {
		m.storedBytes.Set(float64(n))
	}
}

// SetMaxSize records the size bound.
func (m *Metrics) SetMaxSize(n int64) {
	if m != nil {
		m.maxSize.Set(float64(n))
	}
}

// Decision counts one authorization on a repository of the registry
// named origin.
func (m *Metrics) Decision(origin, decision, source string) {
	if m == nil {
		return
	}
	rs, label := m.registry(origin)
	switch {
	case rs == nil:
		m.decisions.WithValues(label, decision, source).Inc()
	case decision == DecisionAllowed && source == SourceCached:
		rs.allowedCache.Inc()
	case decision == DecisionAllowed && source == SourceAsked:
		rs.allowedAsked.Inc()
	case decision == DecisionDenied && source == SourceAsked:
		rs.deniedAsked.Inc()
	default:
		m.decisions.WithValues(label, decision, source).Inc()
	}
}

// Gatherer returns this instance's metrics, and only them: what the
// content_cache_* part of the debug server's /metrics shows for it. Tests and
// programs that embed several caches read it; a registry process also finds
// the same metrics in Prometheus' default registry.
func (m *Metrics) Gatherer() prometheus.Gatherer {
	if m == nil {
		return prometheus.Gatherers{}
	}
	return m.reg
}
