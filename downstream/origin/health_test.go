package origin

import (
	"net/http"
	"testing"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestBackgroundProber: the prober probes at start, again as soon as the
// API adds a cache (not after a whole probeinterval), and stops on Close.
func TestBackgroundProber(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	rounds := make(chan struct{}, 16)
	og := startOriginWith(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{
		"probeinterval": "1h", // only the first round and the kicks happen here
	}, Options{Now: clock.Now, AfterProbe: func() { rounds <- struct{}{} }})
	<-rounds // the round at start

	if r := api(t, og.URL, "admin", "adminpw", http.MethodPost, cachesPath, `{"name":"new","host":"`+cache.URL+`"}`); r.Status != http.StatusCreated {
		t.Fatalf("create: %d %q", r.Status, r.Body)
	}
	select {
	case <-rounds:
	case <-time.After(30 * time.Second): // a bound on failure, not a wait
		t.Fatal("no probe round after the cache was created")
	}
	if !og.Origin.isHealthy("new") {
		t.Fatal("the new cache is not healthy after the round it triggered")
	}
	og.stop()
	select {
	case <-og.Origin.done:
	default:
		t.Fatal("the prober still runs after Close")
	}
}
