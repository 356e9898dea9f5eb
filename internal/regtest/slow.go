package regtest

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// SlowLink is a reverse proxy in front of a registry that streams blob
// bodies slowly, so that a fill through it lasts seconds: at Rate bytes per
// second, and not past HoldAt bytes of any blob body until Release. Every
// other request passes at full speed. It is the slow upstream of the
// security tests: what a client may see while a fill runs.
type SlowLink struct {
	URL string

	opts SlowLinkOptions

	mu       sync.Mutex
	released chan struct{}
	streams  int           // blob bodies past holdAt, waiting or done
	changed  chan struct{} // closed and replaced when streams changes
}

// SlowLinkOptions shape a SlowLink.
type SlowLinkOptions struct {
	// Rate of blob bodies, in bytes per second (required).
	Rate int
	// HoldAt is how many bytes of a blob body go before it waits for
	// Release; < 0 never holds.
	HoldAt int64
	// Latency is added before every request reaches the target (a WAN's
	// round trip). Default: none.
	Latency time.Duration
}

// NewSlowLink proxies to target.
func NewSlowLink(t testing.TB, target string, opts SlowLinkOptions) *SlowLink {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("regtest: slow link target %q: %v", target, err)
	}
	s := &SlowLink{opts: opts, released: make(chan struct{}), changed: make(chan struct{})}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // a client gone is not news
	proxy.FlushInterval = -1
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.StatusCode < 300 {
			resp.Body = &slowBody{rc: resp.Body, link: s, ctx: resp.Request.Context()}
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if opts.Latency > 0 {
			t := time.NewTimer(opts.Latency)
			defer t.Stop()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(s.Release)
	s.URL = srv.URL
	return s
}

// Release lets every held body (and every later one) go on.
func (s *SlowLink) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.released:
	default:
		close(s.released)
	}
}

// WaitHeld blocks until n blob bodies have reached HoldAt.
func (s *SlowLink) WaitHeld(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got, ch := s.streams, s.changed
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *SlowLink) reachedHold() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams++
	close(s.changed)
	s.changed = make(chan struct{})
	return s.released
}

// slowBody paces reads at the link's rate: it stands for a slow network,
// which is what the tests are about, so it sleeps by design.
type slowBody struct {
	rc   io.ReadCloser
	link *SlowLink
	ctx  context.Context
	sent int64
	held bool
}

func (b *slowBody) Read(p []byte) (int, error) {
	if !b.held && b.link.opts.HoldAt >= 0 && b.sent >= b.link.opts.HoldAt {
		b.held = true
		select {
		case <-b.link.reachedHold():
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
	chunk := max(b.link.opts.Rate/20, 1) // 50 ms of the line
	if len(p) > chunk {
		p = p[:chunk]
	}
	if !b.held && b.link.opts.HoldAt >= 0 && int64(len(p)) > b.link.opts.HoldAt-b.sent {
		p = p[:max(b.link.opts.HoldAt-b.sent, 1)]
	}
	n, err := b.rc.Read(p)
	b.sent += int64(n)
	if n > 0 {
		t := time.NewTimer(time.Duration(n) * time.Second / time.Duration(b.link.opts.Rate))
		defer t.Stop()
		select {
		case <-t.C:
		case <-b.ctx.Done():
			return n, b.ctx.Err()
		}
	}
	return n, err
}

func (b *slowBody) Close() error { return b.rc.Close() }
