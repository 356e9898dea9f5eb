package downstream_test

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// switchable passes requests to an origin, or answers every one with a
// fixed status (0: pass).
type switchable struct {
	proxy  *httputil.ReverseProxy
	status atomic.Int32
}

func (s *switchable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if st := int(s.status.Load()); st != 0 {
		w.WriteHeader(st)
		return
	}
	s.proxy.ServeHTTP(w, r)
}

// TestOfflineGraceStatuses: a 5xx from every upstream is an outage (stale
// answers, counted as result stale); a 404, 403 or 401 is an answer and
// goes to the client as it came, and a 401 or 403 drops the credential's
// standing, so that it is not served stale afterwards. A request asking
// for a fresh answer (a chained cache) never gets a stale one. Without
// offlinegrace an outage fails as before.
func TestOfflineGraceStatuses(t *testing.T) {
	users := map[string]string{"alice": "alice-pw"}
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, users))
	img := regtest.RandomImage(251, 1, 4096)
	push(t, origin, img)
	target, _ := url.Parse(origin.URL)
	sw := &switchable{proxy: httputil.NewSingleHostReverseProxy(target)}
	front := httptest.NewServer(sw)
	t.Cleanup(front.Close)

	for _, grace := range []string{"1h", ""} {
		t.Run("offlinegrace="+grace, func(t *testing.T) {
			sw.status.Store(0)
			extra := map[string]any{"authttl": "0", "backoff": "1ms"}
			if grace != "" {
				extra["offlinegrace"] = grace
			}
			cache := regtest.StartCache(t, front.URL, extra)
			alice := &regtest.Client{Base: cache.URL, User: "alice", Pass: "alice-pw"}
			d := digest.FromBytes(img.Layers[0])
			layer := "/v2/" + img.Repo + "/blobs/" + d.String()
			tag := "/v2/" + img.Repo + "/manifests/" + img.Tag
			for _, p := range []string{tag, layer} {
				if st, _, _ := get(t, alice, http.MethodGet, p, ociAccept()); st != 200 {
					t.Fatalf("GET %s before the outage: %d", p, st)
				}
			}
			if err := cache.WaitFillsDone(t.Context()); err != nil {
				t.Fatal(err)
			}
			check := func(status int, hdr http.Header, wantStatus int, stale bool, what string) {
				t.Helper()
				if status != wantStatus || (hdr.Get("Warning") != "") != stale {
					t.Errorf("%s: %d warning %q; want %d stale=%v", what, status, hdr.Get("Warning"), wantStatus, stale)
				}
			}
			sw.status.Store(http.StatusBadGateway)
			for _, p := range []string{tag, layer} {
				st, h, _ := get(t, alice, http.MethodGet, p, ociAccept())
				if grace != "" {
					check(st, h, 200, true, "502 everywhere, "+p)
				} else {
					check(st, h, 502, false, "502 everywhere without offlinegrace, "+p)
				}
				fresh := ociAccept()
				fresh.Set("Cache-Control", "no-cache")
				st, h, _ = get(t, alice, http.MethodGet, p, fresh)
				check(st, h, 502, false, "no-cache in the outage, "+p)
			}
			if grace != "" {
				all := scrape(t, cache.Cache.Gatherer())
				for _, kind := range []string{"blob", "manifest"} {
					n := 0.0
					for key, v := range all {
						if strings.HasPrefix(key, "content_cache_requests_total{") && strings.Contains(key, `kind="`+kind+`"`) && strings.Contains(key, `result="stale"`) {
							n += v
						}
					}
					if n != 1 {
						t.Errorf("content_cache_requests_total{kind=%q,result=\"stale\"} = %v; want 1", kind, n)
					}
				}
			}
			sw.status.Store(http.StatusNotFound)
			for _, p := range []string{tag, layer} {
				st, h, _ := get(t, alice, http.MethodGet, p, ociAccept())
				check(st, h, 404, false, "404 is an answer, "+p)
			}
			sw.status.Store(http.StatusForbidden)
			st, h, _ := get(t, alice, http.MethodGet, layer, ociAccept())
			check(st, h, 403, false, "403 is an answer")
			// Refused: no longer served in an outage.
			sw.status.Store(http.StatusServiceUnavailable)
			st, h, _ = get(t, alice, http.MethodGet, layer, ociAccept())
			check(st, h, 503, false, "the outage after a refusal")
		})
	}
}
