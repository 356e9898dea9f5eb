package registry

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultDrainTimeout is the drain time when http.draintimeout is unset
// (distribution's default, 0, would end the process at once and cut every
// response in flight): how long a process that got SIGTERM or SIGINT lets
// the requests and fills in flight finish before it exits.
const DefaultDrainTimeout = 30 * time.Second

const (
	// drainQuiet: once draining, the process keeps accepting connections
	// until no request (readiness probes aside) has started for this
	// long, so that a load balancer that routed a request before it saw
	// the replica go unready is still answered.
	drainQuiet = 500 * time.Millisecond
	// drainQuietMax bounds that wait when requests keep coming (clients
	// that talk to the replica directly).
	drainQuietMax = 5 * time.Second
)

// readinessPath is the path load balancers probe (distribution answers
// 200 on it, or 503 while a health check fails; see the README's Health).
const readinessPath = "/"

// drainGate is the outermost handler of the registry's server: while the
// process drains, the readiness path answers 503 and every response asks
// for its connection to be closed; it also notes when the last request
// started, for the drain's quiet wait.
type drainGate struct {
	next     http.Handler
	hit      func(http.ResponseWriter, *http.Request) bool // answers what it can before next; nil: none
	draining atomic.Bool

	mu   sync.Mutex
	last time.Time // when the last request other than a probe started
}

func (g *drainGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == readinessPath {
		if g.draining.Load() {
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("Connection", "close")
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
	} else {
		g.mu.Lock()
		g.last = time.Now()
		g.mu.Unlock()
	}
	if g.draining.Load() {
		// Not kept alive: the client's (or the load balancer's) next
		// request opens a connection elsewhere.
		w.Header().Set("Connection", "close")
	}
	if g.hit != nil && g.hit(w, r) {
		return
	}
	g.next.ServeHTTP(w, r)
}

// start makes the readiness path answer 503 from now on.
func (g *drainGate) start() { g.draining.Store(true) }

// quiet waits until no request has started for drainQuiet, drainQuietMax
// passed, or stop is closed.
func (g *drainGate) quiet(stop <-chan struct{}) {
	deadline := time.Now().Add(drainQuietMax)
	t := time.NewTicker(drainQuiet / 10)
	defer t.Stop()
	for {
		g.mu.Lock()
		idle := time.Since(g.last)
		g.mu.Unlock()
		if idle >= drainQuiet || !time.Now().Before(deadline) {
			return
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
