package origin

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/distribution/distribution/v3"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/sirupsen/logrus"
)

// Options are what a program building the app itself can set (SetOptions);
// the zero value is what the registry binary uses.
type Options struct {
	// Now is the clock for signature expiry (default time.Now).
	Now func() time.Time
	// ManualProbes turns off the background prober: the caller runs Probe.
	ManualProbes bool
	// ProbeClient makes the probes (default: a client with ProbeTimeout).
	ProbeClient *http.Client
	// Logger (default: logrus' standard logger).
	Logger logrus.FieldLogger
	// AfterProbe, if set, is called after each background probe round, so
	// that a test can wait for one instead of sleeping.
	AfterProbe func()
}

// Origin decides where a blob download goes and serves the content cache
// API. One instance per app, built by the registry middleware.
type Origin struct {
	cfg     Config
	store   *store
	now     func() time.Time
	client  *http.Client
	log     logrus.FieldLogger
	metrics *metrics

	mu       sync.Mutex
	stored   map[string]Cache     // caches created through the API, as of the last refresh
	healthy  map[string]bool      // by cache name, from the last probe
	probedAt map[string]time.Time // by cache name: when this replica last probed it

	// ns is the app's storage, unwrapped, set by the registry middleware:
	// what signed blob requests are served from (see signed.go).
	ns       distribution.Namespace
	blobPath *regexp.Regexp

	ui *ui // the web pages (ui.go), set by Wrap

	kick       chan struct{} // asks the prober for a round now
	afterProbe func()
	cancel     context.CancelFunc
	done       chan struct{}
}

// New builds an Origin over driver. Unless o.ManualProbes, it probes every
// cache every cfg.ProbeInterval until Close.
func New(cfg Config, driver storagedriver.StorageDriver, o Options) *Origin {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.ProbeClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
		o.ProbeClient = &http.Client{
			Transport: tr,
			Timeout:   cfg.ProbeTimeout,
			// Any answer means alive: a redirect is an answer too.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	if o.Logger == nil {
		o.Logger = logrus.StandardLogger()
	}
	ctx, cancel := context.WithCancel(context.Background())
	og := &Origin{
		cfg:        cfg,
		store:      &store{driver: driver},
		now:        o.Now,
		client:     o.ProbeClient,
		log:        o.Logger.WithField("component", Name),
		metrics:    newMetrics(),
		stored:     map[string]Cache{},
		healthy:    map[string]bool{},
		probedAt:   map[string]time.Time{},
		kick:       make(chan struct{}, 1),
		blobPath:   blobPathRE(),
		afterProbe: o.AfterProbe,
		cancel:     cancel,
		done:       make(chan struct{}),
	}
	if o.ManualProbes {
		close(og.done)
	} else {
		go og.probeLoop(ctx)
	}
	return og
}

// Close stops the prober.
func (o *Origin) Close() error {
	o.cancel()
	<-o.done
	return nil
}

// Config returns the validated configuration.
func (o *Origin) Config() Config { return o.cfg }

// static returns the configured cache named name.
func (o *Origin) static(name string) (Cache, bool) {
	for _, c := range o.cfg.Caches {
		if c.Name == name {
			return c, true
		}
	}
	return Cache{}, false
}

// knownCache returns the cache named name, configured or created through
// the API (as of the last refresh).
func (o *Origin) knownCache(name string) (Cache, bool) {
	if c, ok := o.static(name); ok {
		return c, true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	c, ok := o.stored[name]
	return c, ok
}

// cacheStatus is a cache as the API lists it.
type cacheStatus struct {
	Cache
	// Source is "config" or "api".
	Source  string `json:"source"`
	Healthy bool   `json:"healthy"`
	// LastProbe is when this replica last probed it (nil before).
	LastProbe *time.Time `json:"lastProbe,omitempty"`
	// Redirects counts the blob downloads this replica sent to it.
	Redirects uint64 `json:"redirects"`
}

// caches lists every known cache, sorted by name.
func (o *Origin) caches() []cacheStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]cacheStatus, 0, len(o.cfg.Caches)+len(o.stored))
	for _, c := range o.cfg.Caches {
		out = append(out, o.statusLocked(c, "config"))
	}
	for _, c := range o.stored {
		out = append(out, o.statusLocked(c, "api"))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// statusLocked is c's status; o.mu is held.
func (o *Origin) statusLocked(c Cache, source string) cacheStatus {
	st := cacheStatus{Cache: c, Source: source, Healthy: o.healthy[c.Name], Redirects: o.metrics.redirected(c.Name)}
	if at, ok := o.probedAt[c.Name]; ok {
		at = at.UTC().Truncate(time.Second)
		st.LastProbe = &at
	}
	return st
}

// refresh reloads the caches created through the API, which another
// replica may have changed.
func (o *Origin) refresh(ctx context.Context) error {
	list, err := o.store.caches(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]Cache, len(list))
	for _, c := range list {
		if _, dup := o.static(c.Name); !dup {
			m[c.Name] = c
		}
	}
	o.mu.Lock()
	o.stored = m
	o.mu.Unlock()
	return nil
}

// userCache is the cache a user is assigned to: their own setting, else
// the configuration's users option. "" when neither names one.
func (o *Origin) userCache(ctx context.Context, user string) (string, error) {
	if user == "" {
		return "", nil
	}
	name, err := o.store.setting(ctx, user)
	if err != nil || name != "" {
		return name, err
	}
	return o.cfg.Users[user], nil
}

// assignment is the cache for a request: the user's, else the first
// network rule matching the client's address.
func (o *Origin) assignment(ctx context.Context, user string, r *http.Request) (string, error) {
	name, err := o.userCache(ctx, user)
	if err != nil || name != "" {
		return name, err
	}
	n, _, ok := o.networkRule(r)
	if !ok {
		return "", nil
	}
	return n.Cache, nil
}

// networkRule is the first network rule matching the client's address.
func (o *Origin) networkRule(r *http.Request) (Network, netip.Addr, bool) {
	if len(o.cfg.Networks) == 0 {
		return Network{}, netip.Addr{}, false
	}
	// The connection's address only: X-Forwarded-For is the client's word.
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return Network{}, netip.Addr{}, false
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return Network{}, netip.Addr{}, false
	}
	addr = addr.Unmap()
	for _, n := range o.cfg.Networks {
		if n.Prefix.Contains(addr) {
			return n, addr, true
		}
	}
	return Network{}, addr, false
}
