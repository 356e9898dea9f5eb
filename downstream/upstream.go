package downstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// forwardedRequestHeaders are the only client headers sent upstream: what a
// registry needs to authorize and negotiate, nothing else.
var forwardedRequestHeaders = []string{"Authorization", "Accept", "User-Agent", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"}

// maxErrorBody bounds how much of an upstream error body is read and kept.
const maxErrorBody = 64 << 10

// upstream talks to the configured upstream registries.
type upstream struct {
	hosts  []*url.URL
	client *http.Client
	idle   time.Duration
}

func newUpstream(cfg Config) (*upstream, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	for _, p := range cfg.CAs {
		pemData, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("downstream: option \"cas\": cannot read %q: %v", p, unwrapPathError(err))
		}
		if !roots.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("downstream: option \"cas\": %q holds no PEM certificate", p)
		}
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
	return &upstream{
		hosts:  cfg.Upstreams.Hosts(),
		client: &http.Client{Transport: tr},
		idle:   cfg.IdleTimeout,
	}, nil
}

// host returns the upstream to use. One upstream for now: the first.
func (u *upstream) host() *url.URL { return u.hosts[0] }

func (u *upstream) close() { u.client.CloseIdleConnections() }

// StatusError is an upstream's non-success answer. Body holds at most
// maxErrorBody bytes of it; Header is the upstream's, so challenges
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

// request describes one upstream call.
type request struct {
	method string
	path   string // escaped path, e.g. /v2/library/alpine/manifests/latest
	query  string
	client http.Header // the client's request headers; only forwardedRequestHeaders are sent
	accept string      // overrides the client's Accept when set
	rng    string      // Range header to send, if any
}

// do sends req upstream. A 2xx or 3xx answer comes back as a response whose
// body is guarded by the idle timeout; anything else as a *StatusError (the
// body read and closed), and a failure to connect as an *UpstreamError.
func (u *upstream) do(ctx context.Context, req request) (*http.Response, error) {
	host := u.host()
	target := host.String() + req.path
	if req.query != "" {
		target += "?" + req.query
	}
	ctx, cancel := context.WithCancel(ctx)
	hr, err := http.NewRequestWithContext(ctx, req.method, target, nil)
	if err != nil {
		cancel()
		return nil, &UpstreamError{Host: host.Host, Err: err}
	}
	for _, h := range forwardedRequestHeaders {
		for _, v := range req.client.Values(h) {
			hr.Header.Add(h, v)
		}
	}
	if req.accept != "" {
		hr.Header.Set("Accept", req.accept)
	}
	if req.rng != "" {
		hr.Header.Set("Range", req.rng)
	}
	resp, err := u.client.Do(hr)
	if err != nil {
		cancel()
		return nil, &UpstreamError{Host: host.Host, Err: err}
	}
	if resp.StatusCode >= 400 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		cancel()
		return nil, &StatusError{Host: host.Host, Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
	resp.Body = newIdleBody(resp.Body, u.idle, cancel)
	return resp, nil
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

// hopHeaders are never copied from an upstream response to the client.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// copyResponseHeaders copies an upstream response's end-to-end headers,
// rewriting absolute Link and Location URLs that point at the upstream so
// that the client keeps talking to the cache.
func copyResponseHeaders(dst, src http.Header, host *url.URL) {
	for k, vs := range src {
		if hopHeaders[k] {
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
