package downstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// startReplicas starts n caches of upstream on one shared directory,
// coordinating through redis, each reachable by the others at its own
// URL.
func startReplicas(t *testing.T, n int, upstream string, redis *regtest.Redis, extra map[string]any) []*regtest.Server {
	t.Helper()
	root := t.TempDir()
	var out []*regtest.Server
	for range n {
		opts := map[string]any{"redis": map[any]any{"addr": redis.Addr, "leasettl": "5s"}}
		for k, v := range extra {
			opts[k] = v
		}
		s := regtest.StartCacheAt(t, root, upstream, opts)
		// In-process servers listen where http.addr does not say: tell
		// each replica its URL (what the advertise option does).
		s.Cache.JoinCluster(s.URL, s.Config.HTTP.Secret)
		out = append(out, s)
	}
	return out
}

// slowBlob is one blob of size bytes at an origin, behind a link that
// holds every blob body at 1 MiB until Release, and replicas of a cache of
// that link sharing one storage and a redis-server.
type slowBlob struct {
	origin   *regtest.Server
	slow     *regtest.SlowLink
	replicas []*regtest.Server
	layer    []byte
	d        digest.Digest
	path     string // the blob's URL path
}

func startSlowBlob(t *testing.T, seed int64, size, replicas int) *slowBlob {
	t.Helper()
	return startSlowBlobAuth(t, seed, size, replicas, nil)
}

// startSlowBlobAuth is startSlowBlob with an origin under auth.
func startSlowBlobAuth(t *testing.T, seed int64, size, replicas int, auth configuration.Auth) *slowBlob {
	t.Helper()
	redis := regtest.StartRedis(t)
	origin := regtest.StartOrigin(t, auth)
	img := regtest.RandomImage(seed, 1, size)
	push(t, origin, img)
	d := digest.FromBytes(img.Layers[0])
	slow := regtest.NewSlowLink(t, origin.URL, regtest.SlowLinkOptions{Rate: 64 << 20, HoldAt: 1 << 20})
	return &slowBlob{
		origin: origin, slow: slow, replicas: startReplicas(t, replicas, slow.URL, redis, nil),
		layer: img.Layers[0], d: d, path: "/v2/" + img.Repo + "/blobs/" + d.String(),
	}
}

// fetchVerified GETs a blob and reports what went wrong, if anything: a
// status other than 200, a short body, or bytes that do not hash to dgst.
func fetchVerified(ctx context.Context, url string, dgst digest.Digest, size int64) error {
	resp, err := getAs(ctx, url, "")
	if err != nil {
		return err
	}
	return readVerified(resp, dgst, size)
}

// getAs GETs url with an Authorization header (none if empty) and
// returns the response once its headers came, if its status is 200.
func getAs(ctx context.Context, url, authorization string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, &statusError{resp.StatusCode, string(b)}
	}
	return resp, nil
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("status %d: %s", e.status, e.body) }

// readVerified reads a 200's body to its end and closes it (see
// fetchVerified).
func readVerified(resp *http.Response, dgst digest.Digest, size int64) error {
	defer resp.Body.Close()
	v := dgst.Verifier()
	n, err := io.Copy(v, resp.Body)
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	if n != size || !v.Verified() {
		return fmt.Errorf("a complete-looking wrong body: %d bytes (want %d), verified %v", n, size, v.Verified())
	}
	return nil
}

// TestReplicasOneFetch: 32 concurrent misses of one blob spread over 3
// replicas cause 1 upstream GET, and every body verifies; followers
// stream while the fill runs (the upstream is held mid-blob until every
// client has its headers).
func TestReplicasOneFetch(t *testing.T) {
	sb := startSlowBlob(t, 21, 8<<20, 3)
	origin, slow, replicas, layer, d, path := sb.origin, sb.slow, sb.replicas, sb.layer, sb.d, sb.path

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			r := replicas[i%len(replicas)]
			if err := fetchVerified(ctx, r.URL+path, d, int64(len(layer))); err != nil {
				errs <- fmt.Errorf("client %d on replica %d: %w", i, i%len(replicas), err)
			}
		})
	}
	// Every client is streaming (its request in flight at its replica)
	// while the upstream still holds the blob's end.
	for _, r := range replicas {
		if err := r.WaitInFlight(ctx, n/len(replicas)); err != nil {
			t.Fatalf("clients did not all start while the fill ran: %v", err)
		}
	}
	slow.Release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := origin.Counts.Get(http.MethodGet, path); got != 1 {
		t.Fatalf("%d concurrent GETs over %d replicas caused %d upstream GETs, want 1", n, len(replicas), got)
	}
	led, followed := 0.0, 0.0
	for _, r := range replicas {
		led += metricValue(t, r, "content_cache_fills_led_total")
		followed += metricValue(t, r, "content_cache_fills_followed_total")
	}
	if led != 1 || followed != 2 {
		t.Fatalf("fills led %v, followed %v; want 1 and 2", led, followed)
	}
	// Every replica serves it from the shared storage now.
	for _, r := range replicas {
		if err := r.WaitFillsDone(ctx); err != nil {
			t.Fatal(err)
		}
		if err := fetchVerified(ctx, r.URL+path, d, int64(len(layer))); err != nil {
			t.Fatal(err)
		}
	}
	if got := origin.Counts.Get(http.MethodGet, path); got != 1 {
		t.Fatalf("hits after the fill made %d upstream GETs in all, want 1", got)
	}
}

// metricValue sums a metric's series of one replica.
func metricValue(t *testing.T, s *regtest.Server, name string) float64 {
	t.Helper()
	mfs, err := s.Cache.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// TestReplicaInternalEndpointNeedsKey: the internal endpoint serves
// nothing without the key derived from http.secret.
func TestReplicaInternalEndpointNeedsKey(t *testing.T) {
	redis := regtest.StartRedis(t)
	origin := regtest.StartOrigin(t, nil)
	replicas := startReplicas(t, 1, origin.URL, redis, nil)
	d := digest.FromString("x")
	for _, hdr := range []string{"", "1.deadbeef", fmt.Sprintf("%d.%s", time.Now().Unix(), strings.Repeat("0", 64))} {
		req, _ := http.NewRequest(http.MethodGet, replicas[0].URL+"/_content-cache/v1/fills/"+d.String(), nil)
		if hdr != "" {
			req.Header.Set("Content-Cache-Peer", hdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || bytes.Contains(body, []byte(d.String())) {
			t.Fatalf("peer header %q: status %d, want 403", hdr, resp.StatusCode)
		}
	}
}

// TestReplicasExpiryKeepsOtherReplicasPull: a blob being served by replica
// B is not removed by sweeps on replica A (nor B's own), however long ago
// it was pulled; once B's response ends, expiry removes it.
func TestReplicasExpiryKeepsOtherReplicasPull(t *testing.T) {
	redis := regtest.StartRedis(t)
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(22, 1, 16<<20)
	push(t, origin, img)
	layer := img.Layers[0]
	d := digest.FromBytes(layer)
	path := "/v2/" + img.Repo + "/blobs/" + d.String()
	replicas := startReplicas(t, 2, origin.URL, redis, map[string]any{"blobttl": "2s"})
	a, b := replicas[0], replicas[1]
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	if err := fetchVerified(ctx, b.URL+path, d, int64(len(layer))); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFillsDone(ctx); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(b.Root, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data")
	// A pull on B that stays in flight: its client reads one byte, then
	// waits (the server blocks writing the rest: the client's receive
	// buffer is small).
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+path, nil)
	resp, err := regtest.SlowReaderClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	// Sweep on A until it finds the blob expired and in use (B's pull).
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for busy := false; !busy; {
		st, err := a.Cache.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Removed > 0 {
			t.Fatalf("replica A removed content replica B is serving: %+v", st)
		}
		busy = st.Busy > 0
		select {
		case <-ctx.Done():
			t.Fatal("replica A never saw the blob expired and in use")
		case <-tick.C:
		}
	}
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("the blob's data went while B served it: %v", err)
	}
	v := d.Verifier()
	_, _ = v.Write(first)
	n, err := io.Copy(v, resp.Body)
	if err != nil || n+1 != int64(len(layer)) || !v.Verified() {
		t.Fatalf("B's pull during A's sweeps: %d bytes, %v, verified %v", n+1, err, v.Verified())
	}
	resp.Body.Close()
	// Nobody serves it now: it goes (by A's sweep, or a periodic one).
	for {
		if _, err := a.Cache.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(data); os.IsNotExist(err) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the blob was never removed once nobody served it")
		case <-tick.C:
		}
	}
}

// waitMetric polls a replica's metric until ok holds for its value.
func waitMetric(ctx context.Context, t *testing.T, s *regtest.Server, name string, ok func(float64) bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !ok(metricValue(t, s, name)) {
		select {
		case <-ctx.Done():
			t.Fatalf("%s stayed at %v", name, metricValue(t, s, name))
		case <-tick.C:
		}
	}
}

// TestReplicaFollowerResumesWhenLeaderStops: the replica leading a fill
// stops mid-blob (its fills cancelled, as when its drain time runs out or
// it stalls past its lease); a client streaming the fill through another
// replica still gets the whole verified blob, which that replica fetches
// on from the upstream with a range request from the byte it had. The
// leader's own client gets an aborted body, never a complete-looking one.
func TestReplicaFollowerResumesWhenLeaderStops(t *testing.T) {
	sb := startSlowBlob(t, 23, 4<<20, 2)
	origin, slow, replicas, layer, d, path := sb.origin, sb.slow, sb.replicas, sb.layer, sb.d, sb.path
	a, b := replicas[0], replicas[1]
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	leaderErr := make(chan error, 1)
	go func() { leaderErr <- fetchVerified(ctx, a.URL+path, d, int64(len(layer))) }()
	waitMetric(ctx, t, a, "content_cache_fills_led_total", func(v float64) bool { return v == 1 })
	followerErr := make(chan error, 1)
	go func() { followerErr <- fetchVerified(ctx, b.URL+path, d, int64(len(layer))) }()
	waitMetric(ctx, t, b, "content_cache_fills_followed_total", func(v float64) bool { return v == 1 })
	// B has bytes of the fill: it streams from A, which waits for the
	// upstream's held end.
	if err := b.WaitUpstreamBytes(ctx, "blob", 0); err != nil {
		t.Fatal(err)
	}

	// A stops: no time left for its fills.
	done, stop := context.WithDeadline(ctx, time.Now())
	defer stop()
	_ = a.Cache.Shutdown(done)
	if err := <-leaderErr; err == nil || strings.Contains(err.Error(), "complete-looking") {
		t.Fatalf("the stopped leader's client: %v, want an aborted body", err)
	}
	slow.Release()
	if err := <-followerErr; err != nil {
		t.Fatalf("the follower's client: %v", err)
	}
	if got := metricValue(t, b, "content_cache_lease_takeovers_total"); got != 1 {
		t.Fatalf("lease takeovers on the follower: %v, want 1", got)
	}
	if got := origin.Counts.Get(http.MethodGet, path); got != 2 {
		t.Fatalf("origin GETs of the blob: %d, want 2 (the leader's, the follower's range)", got)
	}
}

// TestReplicaFollowerResumesWithAnAllowedReader: the request that started
// a fill on a follower replica was one the origin refuses (a wrong
// password, as in a flood); it got the origin's 401, and the fill went on
// following the leader for the clients the origin did allow. When the
// leader stops mid-blob, the follower resumes from the upstream with the
// credential of such a client, never with the refused one: that client
// gets the whole verified blob. (Before, the follower resumed with the
// request that started its fill; the origin refused it, and the allowed
// client's body was cut.)
func TestReplicaFollowerResumesWithAnAllowedReader(t *testing.T) {
	sb := startSlowBlobAuth(t, 25, 4<<20, 2, regtest.HtpasswdAuth(t, users))
	origin, slow, replicas, layer, d, path := sb.origin, sb.slow, sb.replicas, sb.layer, sb.d, sb.path
	a, b := replicas[0], replicas[1]
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	leaderErr := make(chan error, 1)
	go func() {
		resp, err := getAs(ctx, a.URL+path, basic("carol", "carol-pw"))
		if err == nil {
			err = readVerified(resp, d, int64(len(layer)))
		}
		leaderErr <- err
	}()
	waitMetric(ctx, t, a, "content_cache_fills_led_total", func(v float64) bool { return v == 1 })

	// The refused request starts B's fill, which follows A's.
	_, err := getAs(ctx, b.URL+path, basic("carol", "wrong"))
	var se *statusError
	if !errors.As(err, &se) || se.status != http.StatusUnauthorized {
		t.Fatalf("a wrong password on replica B: %v, want the origin's 401", err)
	}
	if got := metricValue(t, b, "content_cache_fills_followed_total"); got != 1 {
		t.Fatalf("fills followed on B: %v, want 1 (started by the refused request)", got)
	}
	// bob, whom the origin allows, joins it: his headers come once he is
	// authorized to read the fill.
	resp, err := getAs(ctx, b.URL+path, basic("bob", "bob-pw"))
	if err != nil {
		t.Fatalf("bob on replica B: %v", err)
	}
	bobErr := make(chan error, 1)
	go func() { bobErr <- readVerified(resp, d, int64(len(layer))) }()

	// A stops: no time left for its fills.
	done, stop := context.WithDeadline(ctx, time.Now())
	defer stop()
	_ = a.Cache.Shutdown(done)
	if err := <-leaderErr; err == nil || strings.Contains(err.Error(), "complete-looking") {
		t.Fatalf("the stopped leader's client: %v, want an aborted body", err)
	}
	slow.Release()
	if err := <-bobErr; err != nil {
		t.Fatalf("bob's body through the follower: %v", err)
	}
	// The leader's fill, the refused request's (its 401 relayed with the
	// origin's body), and the follower's range with bob's credential.
	if got := origin.Counts.Get(http.MethodGet, path); got != 3 {
		t.Fatalf("origin GETs of the blob: %d, want 3", got)
	}
}

// TestDrainingReplicaTakesNoLease: a draining replica fetches a miss
// without taking the fill lease, so that no other replica streams from a
// process about to stop: a request on another replica meanwhile leads a
// fill of its own.
func TestDrainingReplicaTakesNoLease(t *testing.T) {
	sb := startSlowBlob(t, 24, 2<<20, 2)
	slow, replicas, layer, d, path := sb.slow, sb.replicas, sb.layer, sb.d, sb.path
	a, b := replicas[0], replicas[1]
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	a.Cache.StartDrain()
	errs := make(chan error, 2)
	go func() { errs <- fetchVerified(ctx, a.URL+path, d, int64(len(layer))) }()
	if err := a.WaitUpstreamBytes(ctx, "blob", 1); err != nil {
		t.Fatal(err)
	}
	go func() { errs <- fetchVerified(ctx, b.URL+path, d, int64(len(layer))) }()
	waitMetric(ctx, t, b, "content_cache_fills_led_total", func(v float64) bool { return v == 1 })
	slow.Release()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if led := metricValue(t, a, "content_cache_fills_led_total"); led != 0 {
		t.Fatalf("the draining replica led %v fills, want 0", led)
	}
	if followed := metricValue(t, b, "content_cache_fills_followed_total"); followed != 0 {
		t.Fatalf("replica B followed %v fills, want 0 (it must not follow a draining replica)", followed)
	}
}

// TestReplicasSizeBound: the size bound counts what every replica stored.
// Five layers pulled in turn through two replicas (three through A, two
// through B) pass maxsize (4.5 layers) although neither replica stored
// more than three; the least recently pulled go, whichever replica pulled
// them, down to the low watermark (60%: 2.7 layers), and the cluster's
// count says so.
func TestReplicasSizeBound(t *testing.T) {
	redis := regtest.StartRedis(t)
	origin := regtest.StartOrigin(t, nil)
	var layers [][]byte
	for i := range 5 {
		layers = append(layers, randomLayer(int64(300+i), sizeBlob))
	}
	img := regtest.WithLayers(regtest.Image{Repo: "team/sized", Tag: "v1"}, layers)
	pushImage(t, origin, img)
	replicas := startReplicas(t, 2, origin.URL, redis, map[string]any{
		"maxsize": strconv.Itoa(sizeBlob*9/2) + "B", "lowwatermark": "60%",
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var ds []digest.Digest
	for i := range layers {
		p, d := layerAt(img, i)
		pull(t, replicas[i%2], p, d)
		ds = append(ds, d)
	}
	driver := replicas[0].Cache.Driver()
	want := map[digest.Digest]bool{ds[0]: false, ds[1]: false, ds[2]: false, ds[3]: true, ds[4]: true}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok := true
		for d, keep := range want {
			ok = ok && dataExists(t, driver, d) == keep
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			for i, d := range ds {
				t.Errorf("layer %d (pulled through replica %d): stored %v, want %v", i, i%2, dataExists(t, driver, d), want[d])
			}
			t.Fatal("the size bound did not evict the least recently pulled layers across replicas")
		case <-tick.C:
		}
	}
	for _, r := range replicas {
		waitMetric(ctx, t, r, "content_cache_stored_bytes", func(v float64) bool { return v == 2*sizeBlob })
	}
	evicted := metricValue(t, replicas[0], "content_cache_evictions_total") + metricValue(t, replicas[1], "content_cache_evictions_total")
	if evicted != 3 {
		t.Fatalf("evictions over both replicas: %v, want 3", evicted)
	}
}
