package upstream

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/downstream/internal/metrics"
)

// forwardedRequestHeaders are the only client headers sent upstream: what a
// registry needs to authorize and negotiate, nothing else.
var forwardedRequestHeaders = []string{"Authorization", "Accept", "User-Agent", "If-Range", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded", "Via"}

// MaxErrorBody bounds how much of an upstream error body is read and kept.
const MaxErrorBody = 64 << 10

// upstream talks to the configured upstream registries: round-robin where
// the configuration says so, failing over to the next one on a connection
// error, a timeout, a 5xx or a 429, and skipping a failed one for a backoff
// period so that a dead upstream costs one failed attempt per period.
type Pool struct {
	hosts   []*url.URL // every upstream, in configuration order
	rr      []*url.URL // the ones requests rotate across
	last    *url.URL   // tried after the rotation (the DTR form's origin), or nil
	client  *http.Client
	idle    time.Duration
	backoff time.Duration
	now     func() time.Time
	via     string // this instance's token in the Via header
	log     *logrus.Entry
	metrics *metrics.Metrics // counts round trips (nil: none)
	anon    *anonymous       // the account for requests without credentials, or nil
	ns      string           // the registry's ns ("" for the default registry), sent to upstreams that are not the registry itself

	mu        sync.Mutex
	next      int
	downUntil map[string]time.Time
}

// New is the pool of one registry's upstreams. via is the cache's token in
// the Via header, one for all its registries.
func New(cfg config.Registry, via string, now func() time.Time, log *logrus.Entry, m *metrics.Metrics) (*Pool, error) {
	roots, err := cfg.Roots()
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   cfg.DialTimeout,
		ResponseHeaderTimeout: cfg.HeaderTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Blobs are content-addressed and verified; transparent gzip would
		// change what we hash.
		DisableCompression: true,
	}
	u := &Pool{
		metrics:   m,
		hosts:     cfg.Upstreams.Hosts(),
		client:    &http.Client{Transport: tr},
		idle:      cfg.IdleTimeout,
		backoff:   cfg.Backoff,
		now:       now,
		via:       via,
		ns:        cfg.Name,
		log:       log,
		downUntil: make(map[string]time.Time),
	}
	if cfg.Anonymous != nil {
		if u.anon, err = newAnonymous(cfg.Anonymous, u.client); err != nil {
			return nil, err
		}
	}
	if cfg.Upstreams.Equivalent || len(cfg.Upstreams.Caches) == 0 {
		u.rr = u.hosts
	} else {
		u.rr, u.last = cfg.Upstreams.Caches, cfg.Upstreams.Origin
	}
	return u, nil
}

// Close releases idle connections.
func (u *Pool) Close() { u.client.CloseIdleConnections() }

// Hosts returns every upstream, in configuration order.
func (u *Pool) Hosts() []*url.URL { return u.hosts }

// Via is this instance's token in the Via header.
func (u *Pool) Via() string { return u.via }

// Origin is the upstream that owns the content.
func (u *Pool) Origin() *url.URL { return u.hosts[len(u.hosts)-1] }

// plan returns the upstreams to try for one request: the next in the
// rotation first, then the rest, then the last resort; upstreams in backoff
// go after every healthy one, so they are tried only when nothing else is
// left.
func (u *Pool) plan() []*url.URL {
	u.mu.Lock()
	defer u.mu.Unlock()
	start := u.next % len(u.rr)
	u.next++
	order := make([]*url.URL, 0, len(u.hosts))
	for i := range u.rr {
		order = append(order, u.rr[(start+i)%len(u.rr)])
	}
	if u.last != nil {
		order = append(order, u.last)
	}
	now := u.now()
	healthy, down := order[:0:0], []*url.URL(nil)
	for _, h := range order {
		if until, ok := u.downUntil[h.Host]; ok && now.Before(until) {
			down = append(down, h)
		} else {
			healthy = append(healthy, h)
		}
	}
	return append(healthy, down...)
}

func (u *Pool) MarkDown(h *url.URL, err error) {
	u.mu.Lock()
	u.downUntil[h.Host] = u.now().Add(u.backoff)
	u.mu.Unlock()
	u.log.WithError(err).WithField("upstream", h.Host).Warn("upstream failed; skipping it for the backoff period")
}

func (u *Pool) markUp(h *url.URL) {
	u.mu.Lock()
	delete(u.downUntil, h.Host)
	u.mu.Unlock()
}

// IsAnswer reports whether err is an upstream's answer (as opposed to no
// answer at all).
func IsAnswer(err error) (*StatusError, bool) {
	var se *StatusError
	ok := errors.As(err, &se)
	return se, ok
}

// ErrorHost names the upstream an error came from, for the log.
func ErrorHost(err error) string {
	if se, ok := IsAnswer(err); ok {
		return se.Host
	}
	var ue *UpstreamError
	if errors.As(err, &ue) {
		return ue.Host
	}
	return ""
}

// Probe sends GET /v2/ to one upstream, anonymously, with this instance's
// Via token (a chain of caches that loops ends the probe where the loop
// closes): any HTTP answer means reachable.
func (u *Pool) Probe(ctx context.Context, h *url.URL, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.String()+"/v2/", nil)
	if err != nil {
		return fmt.Errorf("%s: %v", h.Host, err)
	}
	req.Header.Set("User-Agent", "content-cache health check")
	req.Header.Set("Via", "1.1 "+u.via)
	resp, err := u.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is h's, named already
		}
		return fmt.Errorf("%s: %v", h.Host, err)
	}
	// Drained a little, so that the connection can serve requests next.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxErrorBody))
	resp.Body.Close()
	return nil
}

// retryable reports whether another upstream may answer better: no answer
// at all, a server error or a rate limit. 401, 403 and 404 are answers.
func retryable(err error) bool {
	if se, ok := IsAnswer(err); ok {
		return se.Status >= 500 || se.Status == http.StatusTooManyRequests
	}
	var ue *UpstreamError
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled)
}

// moreUseful reports whether err beats best as the error to give the
// client: an answer beats a network error.
func moreUseful(err, best error) bool {
	if best == nil {
		return true
	}
	_, errAnswer := IsAnswer(err)
	_, bestAnswer := IsAnswer(best)
	return errAnswer && !bestAnswer
}

// StatusError is an upstream's non-success answer. Body holds at most
// MaxErrorBody bytes of it; Header is the upstream's, so challenges
// (WWW-Authenticate) reach the client unchanged.
type StatusError struct {
	Host   string
	Status int
	Header http.Header
	Body   []byte
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream %s answered %d %s", e.Host, e.Status, http.StatusText(e.Status))
}

// UpstreamError is a failure to get any answer from an upstream.
type UpstreamError struct {
	Host string
	Err  error
}

func (e *UpstreamError) Error() string { return fmt.Sprintf("upstream %s: %v", e.Host, e.Err) }
func (e *UpstreamError) Unwrap() error { return e.Err }

// Request describes one upstream call.
type Request struct {
	Method string
	Path   string // escaped path, e.g. /v2/library/alpine/manifests/latest
	Query  string
	Client http.Header     // the client's request headers; only forwardedRequestHeaders are sent
	Range  string          // Range header to send, if any
	Skip   map[string]bool // upstream hosts not to ask
	// IfNoneMatch is sent as If-None-Match, if any (the client's own is
	// never forwarded: the cache compares it itself).
	IfNoneMatch string
}

// Response is an upstream's successful answer and who gave it.
type Response struct {
	*http.Response
	Host *url.URL // the upstream that answered
}

// Do sends req to the upstreams in plan order until one answers. A 2xx or
// 3xx answer comes back as a response whose body is guarded by the idle
// timeout; otherwise the most useful failure: an upstream's answer as a
// *StatusError (its body read and closed), or an *UpstreamError when no
// upstream answered.
func (u *Pool) Do(ctx context.Context, req Request) (*Response, error) {
	var best error
	for _, h := range u.plan() {
		if req.Skip[h.Host] {
			continue
		}
		resp, err := u.try(ctx, h, req)
		if err == nil {
			u.markUp(h)
			return &Response{Response: resp, Host: h}, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if !retryable(err) {
			u.markUp(h) // it answered
			return nil, err
		}
		u.MarkDown(h, err)
		if moreUseful(err, best) {
			best = err
		}
	}
	if best == nil {
		best = &UpstreamError{Host: "(none)", Err: errors.New("no upstream left to ask")}
	}
	return nil, best
}

// try sends req to one upstream.
func (u *Pool) try(ctx context.Context, host *url.URL, req Request) (*http.Response, error) {
	target := host.String() + req.Path
	if q := u.query(host, req.Query); q != "" {
		target += "?" + q
	}
	ctx, cancel := context.WithCancel(ctx)
	hr, err := http.NewRequestWithContext(ctx, req.Method, target, nil)
	if err != nil {
		cancel()
		return nil, &UpstreamError{Host: host.Host, Err: redactQuery(err)}
	}
	for _, h := range forwardedRequestHeaders {
		for _, v := range req.Client.Values(h) {
			hr.Header.Add(h, v)
		}
	}
	// Via carries every cache the request passed, so that a loop in the
	// configuration is detected where it closes.
	hr.Header.Add("Via", "1.1 "+u.via)
	// An upstream content cache must ask the origin rather than answer
	// from its decisions: this cache keeps the answer for authttl itself
	// (see wantsFresh).
	hr.Header.Set("Cache-Control", "no-cache")
	if req.Range != "" {
		hr.Header.Set("Range", req.Range)
	}
	if req.IfNoneMatch != "" {
		hr.Header.Set("If-None-Match", req.IfNoneMatch)
	}
	start := time.Now()
	var resp *http.Response
	if u.anon != nil && hr.Header.Get("Authorization") == "" {
		resp, err = u.anon.do(hr)
	} else {
		resp, err = u.client.Do(hr)
	}
	u.metrics.UpstreamRequest(host.Host, metrics.StatusClass(resp, err), time.Since(start))
	if err != nil {
		cancel()
		return nil, &UpstreamError{Host: host.Host, Err: redactQuery(err)}
	}
	if resp.StatusCode >= 400 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody))
		resp.Body.Close()
		cancel()
		return nil, &StatusError{Host: host.Host, Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
	resp.Body = newIdleBody(resp.Body, u.idle, cancel)
	return resp, nil
}

// query is the query sent to host: the request's without the client's
// ns, plus the registry's own ns for an upstream that is not the registry
// itself (a content cache of it, which serves several registries by ns
// too). The default registry's requests carry no ns, as before registries.
func (u *Pool) query(host *url.URL, q string) string {
	if strings.Contains(q, "ns=") {
		parts := strings.Split(q, "&")
		kept := parts[:0]
		for _, p := range parts {
			if !strings.HasPrefix(p, "ns=") && p != "ns" {
				kept = append(kept, p)
			}
		}
		q = strings.Join(kept, "&")
	}
	if u.ns == "" || sameHost(u.ns, host) {
		return q
	}
	if q != "" {
		q += "&"
	}
	return q + "ns=" + url.QueryEscape(u.ns)
}

// sameHost reports whether the registry named ns (canonical) is host
// itself, rather than a cache of it.
func sameHost(ns string, host *url.URL) bool {
	h, err := config.NS(host.Host)
	if err != nil {
		return false
	}
	if host.Scheme == "http" {
		h, ns = strings.TrimSuffix(h, ":80"), strings.TrimSuffix(ns, ":80")
	}
	return h == ns
}

// Looped reports whether a client request already passed this cache.
func (u *Pool) Looped(r *http.Request) bool {
	for _, v := range r.Header.Values("Via") {
		// Case-insensitive: a proxy between may change the case (the
		// token is lowercase).
		if strings.Contains(strings.ToLower(v), u.via) {
			return true
		}
	}
	return false
}

// idleBody cancels the upstream request when no byte arrived for a while,
// so that a hung upstream cannot hold a fill, or a client, forever.
type idleBody struct {
	rc     io.ReadCloser
	idle   time.Duration
	timer  *time.Timer
	cancel context.CancelFunc

	mu      sync.Mutex
	expired bool
}

// errIdle reports an upstream body that stalled for longer than the idle
// timeout.
var errIdle = errors.New("upstream body idle for too long")

func newIdleBody(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *idleBody {
	b := &idleBody{rc: rc, idle: idle, cancel: cancel}
	b.timer = time.AfterFunc(idle, func() {
		b.mu.Lock()
		b.expired = true
		b.mu.Unlock()
		cancel()
	})
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	if err != nil && err != io.EOF {
		b.mu.Lock()
		expired := b.expired
		b.mu.Unlock()
		if expired {
			err = errIdle
		}
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel()
	return err
}

// HopHeader reports the headers never copied from an upstream response to
// the client (canonical keys).
func HopHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// CopyResponseHeaders copies an upstream response's end-to-end headers,
// rewriting absolute Link URLs that point at the upstream so
// that the client keeps talking to the cache.
func CopyResponseHeaders(dst, src http.Header, host *url.URL) {
	for k, vs := range src {
		if HopHeader(k) {
			continue
		}
		for _, v := range vs {
			if k == "Link" {
				v = strings.ReplaceAll(v, host.String(), "")
			}
			dst.Add(k, v)
		}
	}
}

// BlobPath is the API path of a blob of the repository named repo at its
// origin.
func BlobPath(repo string, dgst digest.Digest) string {
	return "/v2/" + repo + "/blobs/" + dgst.String()
}

// NewVia is a cache instance's token in the Via header.
func NewVia() string {
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	return "content-cache-" + hex.EncodeToString(token)
}

// Anonymous reports whether the pool asks with an account when a request
// carries no credentials.
func (u *Pool) Anonymous() bool { return u.anon != nil }
