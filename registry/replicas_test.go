package registry_test

// The replicas' guarantees (issue 21) tested with real parts: three
// processes of the binary on one storage, a redis-server of the test's own
// (killed and restarted for real), versitygw as the object store, haproxy
// in front, crane as a client, and an origin behind a throttled link that
// keeps a fill long. downstream/replicas_test.go runs replicas in process;
// these kill, stop and restart them by PID.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// replicaSetup is an origin holding img, a slow link in front of it, a
// redis-server, and three replicas of the binary on st upstream of the
// link, coordinating through Redis with a lease of leaseTTL.
type replicaSetup struct {
	origin *regtest.Server
	link   *regtest.SlowLink
	redis  *regtest.Redis
	c      *regtest.Cluster
}

func startReplicaSetup(t *testing.T, st regtest.Storage, link regtest.SlowLinkOptions, leaseTTL string, noLB bool, extra map[string]any, imgs ...regtest.Image) *replicaSetup {
	t.Helper()
	s := &replicaSetup{origin: regtest.StartOrigin(t, nil), redis: regtest.StartRedis(t)}
	for _, img := range imgs {
		if err := regtest.Push(t.Context(), s.origin.URL, "", "", img); err != nil {
			t.Fatal(err)
		}
	}
	s.link = regtest.NewSlowLink(t, s.origin.URL, link)
	opts := map[string]any{"redis": map[string]any{"addr": s.redis.Addr, "leasettl": leaseTTL}}
	for k, v := range extra {
		opts[k] = v
	}
	s.c = regtest.StartCluster(t, regtest.ClusterOptions{Storage: st, Upstream: s.link.URL, Options: opts, NoLB: noLB})
	return s
}

// originGETs is how many GETs of the blob d of repo the origin answered.
func (s *replicaSetup) originGETs(repo string, d digest.Digest) int {
	return s.origin.Counts.Get(http.MethodGet, "/v2/"+repo+"/blobs/"+d.String())
}

// sumMetric sums a metric over the replicas that run.
func sumMetric(ctx context.Context, t *testing.T, c *regtest.Cluster, name string, labels ...string) float64 {
	t.Helper()
	sum := 0.0
	for _, r := range c.Replicas {
		if done, _ := r.Proc.Exited(); done {
			continue
		}
		v, err := r.Metric(ctx, name, labels...)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// blobResult is what one client got of a blob: the status, how many bytes,
// whether they hash to the digest, and how the body ended.
type blobResult struct {
	status   int
	n        int64
	verified bool
	err      error // the request's or the body's error; nil: ended cleanly
}

// completeWrong is a body that a client would take for the blob and that
// is not: every announced byte, ended cleanly, not the digest's content.
func (r blobResult) completeWrong(size int64) bool {
	return r.status == http.StatusOK && r.err == nil && !(r.n == size && r.verified)
}

func (r blobResult) ok(size int64) bool {
	return r.status == http.StatusOK && r.err == nil && r.n == size && r.verified
}

func (r blobResult) String() string {
	return fmt.Sprintf("status %d, %d bytes, verified %v, err %v", r.status, r.n, r.verified, r.err)
}

// getBlob GETs url and hashes its body against d; started (if set) is
// called once the first bytes of the body arrived.
func getBlob(ctx context.Context, hc *http.Client, url string, d digest.Digest, started func()) blobResult {
	if hc == nil {
		hc = http.DefaultClient
	}
	if started == nil {
		started = func() {}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return blobResult{err: err}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return blobResult{err: err}
	}
	defer resp.Body.Close()
	res := blobResult{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		res.err = fmt.Errorf("%s: %s", resp.Status, b)
		return res
	}
	v := d.Verifier()
	buf := make([]byte, 32<<10)
	first := true
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			_, _ = v.Write(buf[:n])
			res.n += int64(n)
			if first {
				first = false
				started()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
	}
	res.verified = v.Verified()
	return res
}

// blobURL is the URL of layer d of repo at base.
func blobURL(base, repo string, d digest.Digest) string {
	return base + "/v2/" + repo + "/blobs/" + d.String()
}

// verifyStored reads the blob's data from the storage, with a driver of
// the test's own, and checks it hashes to d.
func verifyStored(ctx context.Context, st regtest.Storage, drv interface {
	GetContent(context.Context, string) ([]byte, error)
}, d digest.Digest) error {
	b, err := drv.GetContent(ctx, "/docker/registry/v2/blobs/sha256/"+d.Encoded()[:2]+"/"+d.Encoded()+"/data")
	if err != nil {
		return fmt.Errorf("the stored blob: %w", err)
	}
	if got := digest.FromBytes(b); got != d {
		return fmt.Errorf("the stored blob %s holds %d bytes of digest %s", d, len(b), got)
	}
	return nil
}

// waitStoredBlob waits until the blob d is committed in the storage.
func waitStoredBlob(ctx context.Context, st regtest.Storage, drv interface {
	GetContent(context.Context, string) ([]byte, error)
}, d digest.Digest) error {
	return regtest.Poll(ctx, func(ctx context.Context) error { return verifyStored(ctx, st, drv, d) })
}

// leader waits until one replica reports it leads a fill, and returns it.
func leader(ctx context.Context, t *testing.T, c *regtest.Cluster) *regtest.Replica {
	t.Helper()
	var found *regtest.Replica
	err := regtest.Poll(ctx, func(ctx context.Context) error {
		for _, r := range c.Replicas {
			v, err := r.Metric(ctx, "content_cache_fills_led_total")
			if err != nil {
				return err
			}
			if v > 0 {
				found = r
				return nil
			}
		}
		return errors.New("no replica leads a fill")
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// TestReplicaProcessesOneFetch: 32 concurrent misses of one blob spread
// over 3 replica processes, round-robin, cause 1 GET at the origin; every
// client receives the first bytes of its body while the upstream still
// holds the blob's end (the link holds every blob body after 1 MiB until
// every client has bytes), and every body verifies.
func TestReplicaProcessesOneFetch(t *testing.T) {
	img := regtest.RandomImage(2121, 1, 8<<20)
	img.Repo = "replicas/onefetch"
	s := startReplicaSetup(t, regtest.Filesystem(t), regtest.SlowLinkOptions{Rate: 64 << 20, HoldAt: 1 << 20}, "5s", true, nil, img)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	d := digest.FromBytes(img.Layers[0])
	size := int64(len(img.Layers[0]))
	const n = 32
	var started sync.WaitGroup
	started.Add(n)
	results := make([]blobResult, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var once sync.Once
			r := s.c.Replicas[i%len(s.c.Replicas)]
			results[i] = getBlob(ctx, &http.Client{Transport: &http.Transport{}}, blobURL(r.URL, img.Repo, d), d, func() { once.Do(started.Done) })
			once.Do(started.Done) // a failed client counts as started, and fails below
		})
	}
	waited := make(chan struct{})
	go func() { started.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		t.Fatal("the clients did not all receive bytes while the upstream held the blob's end")
	}
	// The upstream sent at most HoldAt bytes of the blob so far.
	if err := s.link.WaitHeld(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s.link.Release()
	wg.Wait()
	for i, r := range results {
		if !r.ok(size) {
			t.Errorf("client %d on replica %d: %s", i, i%len(s.c.Replicas), r)
		}
	}
	if got := s.originGETs(img.Repo, d); got != 1 {
		t.Fatalf("%d concurrent GETs over %d replica processes: %d GETs at the origin, want 1", n, len(s.c.Replicas), got)
	}
	led := sumMetric(ctx, t, s.c, "content_cache_fills_led_total")
	followed := sumMetric(ctx, t, s.c, "content_cache_fills_followed_total")
	if led != 1 || followed != 2 {
		t.Fatalf("fills led %v, followed %v; want 1 and 2", led, followed)
	}
}

// TestReplicaProcessesCraneThroughHAProxy: 8 crane clients pull one cold
// image at once through haproxy in front of 3 replica processes: the
// origin sends each blob once.
func TestReplicaProcessesCraneThroughHAProxy(t *testing.T) {
	crane := regtest.Tool(t, "crane", "bin/crane")
	img := regtest.RandomImage(2122, 4, 2<<20)
	img.Repo = "replicas/crane"
	// 2 MiB at 4 MiB/s: half a second per blob, long enough for the
	// clients to meet in the fills.
	s := startReplicaSetup(t, regtest.Filesystem(t), regtest.SlowLinkOptions{Rate: 4 << 20, HoldAt: -1}, "5s", false, nil, img)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	host := strings.TrimPrefix(s.c.URL(), "http://")
	env := append(childEnv(), "DOCKER_CONFIG="+t.TempDir())
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cmd := exec.CommandContext(ctx, crane, "pull", "--format", "oci", host+"/"+img.Repo+":"+img.Tag, filepath.Join(t.TempDir(), "img"))
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("crane %d: %v\n%s", i, err, out)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i, b := range append([][]byte{img.Config}, img.Layers...) {
		d := digest.FromBytes(b)
		if got := s.originGETs(img.Repo, d); got != 1 {
			t.Errorf("blob %d (%s): %d GETs at the origin for %d crane pulls through haproxy, want 1", i, d, got, n)
		}
	}
}

// TestReplicaProcessKilledMidFill: the replica leading a fill is killed
// (SIGKILL) while its upstream is held mid-blob. Its own clients get an
// aborted response, never a complete-looking body; the clients following
// its fill on the other replicas get a verified body or an aborted one; a
// retry succeeds with a verified body; and the blob in the storage (S3,
// and the filesystem, which the cache writes directly) verifies, as does
// what every replica serves afterwards, the killed one restarted
// included. On the filesystem, the killed replica's upload is left for
// distribution's upload purger, which must be able to read its startedat.
func TestReplicaProcessKilledMidFill(t *testing.T) {
	t.Run("s3", func(t *testing.T) { testReplicaProcessKilledMidFill(t, regtest.StartS3(t)) })
	t.Run("filesystem", func(t *testing.T) { testReplicaProcessKilledMidFill(t, regtest.Filesystem(t)) })
}

func testReplicaProcessKilledMidFill(t *testing.T, st regtest.Storage) {
	img := regtest.RandomImage(2123, 1, 12<<20)
	img.Repo = "replicas/killed"
	s := startReplicaSetup(t, st, regtest.SlowLinkOptions{Rate: 16 << 20, HoldAt: 3 << 20}, "2s", true, nil, img)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	d := digest.FromBytes(img.Layers[0])
	size := int64(len(img.Layers[0]))
	// The first client makes its replica the leader; the others join.
	first := s.c.Replicas[0]
	const perReplica = 3
	type client struct {
		replica *regtest.Replica
		res     blobResult
	}
	var clients []*client
	var started sync.WaitGroup
	var wg sync.WaitGroup
	launch := func(r *regtest.Replica) {
		cl := &client{replica: r}
		clients = append(clients, cl)
		started.Add(1)
		wg.Go(func() {
			var once sync.Once
			cl.res = getBlob(ctx, &http.Client{Transport: &http.Transport{}}, blobURL(r.URL, img.Repo, d), d, func() { once.Do(started.Done) })
			once.Do(started.Done)
		})
	}
	launch(first)
	lead := leader(ctx, t, s.c)
	if lead != first {
		t.Fatalf("replica %d leads the fill, want %d (its only client's)", lead.Index, first.Index)
	}
	for range perReplica {
		for _, r := range s.c.Replicas {
			if len(clients) < perReplica*len(s.c.Replicas) {
				launch(r)
			}
		}
	}
	// Every client streams, and the fill is held at the link: mid-blob.
	waitStarted := make(chan struct{})
	go func() { started.Wait(); close(waitStarted) }()
	select {
	case <-waitStarted:
	case <-ctx.Done():
		t.Fatal("the clients did not all receive bytes of the fill")
	}
	if err := s.link.WaitHeld(ctx, 1); err != nil {
		t.Fatal(err)
	}
	lead.Kill()
	// The next fetch (by whichever replica takes the lease over) goes
	// through at full speed.
	s.link.Release()
	wg.Wait()
	for i, cl := range clients {
		r := cl.res
		if r.completeWrong(size) {
			t.Errorf("client %d on replica %d: a complete-looking wrong body: %s", i, cl.replica.Index, r)
		}
		if cl.replica == lead && r.ok(size) {
			t.Errorf("client %d on the killed leader got the whole blob: %s", i, r)
		}
		t.Logf("client %d on replica %d: %s", i, cl.replica.Index, r)
	}
	// A retry on each surviving replica succeeds, verified.
	for _, r := range s.c.Replicas {
		if r == lead {
			continue
		}
		err := regtest.Poll(ctx, func(ctx context.Context) error {
			res := getBlob(ctx, nil, blobURL(r.URL, img.Repo, d), d, nil)
			if res.completeWrong(size) {
				return fmt.Errorf("replica %d: a complete-looking wrong body on retry: %s", r.Index, res)
			}
			if !res.ok(size) {
				return fmt.Errorf("replica %d: retry: %s", r.Index, res)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	drv := st.NewDriver(t)
	if err := waitStoredBlob(ctx, st, drv, d); err != nil {
		t.Fatal(err)
	}
	// The killed replica, started again, serves the stored blob.
	lead.Start()
	if err := lead.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.c.Replicas {
		if res := getBlob(ctx, nil, blobURL(r.URL, img.Repo, d), d, nil); !res.ok(size) {
			t.Errorf("replica %d after the kill: %s", r.Index, res)
		}
	}
	if err := verifyStored(ctx, st, drv, d); err != nil {
		t.Fatal(err)
	}
	if st.Driver == "filesystem" {
		// The killed leader's upload is still there, and distribution's
		// purger removes it once old enough: its startedat parses.
		deleted, errs := storage.PurgeUploads(ctx, drv, time.Now().Add(time.Hour), true)
		if len(errs) > 0 || !slices.ContainsFunc(deleted, func(p string) bool { return strings.Contains(p, "/_uploads/") }) {
			t.Errorf("upload purger: deleted %v, errors %v; want the killed replica's upload deleted", deleted, errs)
		}
	}
	t.Logf("lease takeovers: %v", sumMetric(ctx, t, s.c, "content_cache_lease_takeovers_total"))
}

// TestReplicaProcessStoppedPastLease: the replica leading a fill is
// frozen (SIGSTOP) past its lease (2 s), then resumed (SIGCONT). Another
// replica takes the lease over; every body served verifies or is aborted,
// never complete-looking and wrong; the stored blob verifies; and once the
// frozen replica is back, every replica serves the verified blob.
func TestReplicaProcessStoppedPastLease(t *testing.T) {
	img := regtest.RandomImage(2124, 1, 8<<20)
	img.Repo = "replicas/stopped"
	st := regtest.Filesystem(t)
	s := startReplicaSetup(t, st, regtest.SlowLinkOptions{Rate: 16 << 20, HoldAt: 2 << 20}, "2s", true, nil, img)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	d := digest.FromBytes(img.Layers[0])
	size := int64(len(img.Layers[0]))
	type client struct {
		replica *regtest.Replica
		res     blobResult
	}
	var mu sync.Mutex
	var clients []*client
	var wg sync.WaitGroup
	launch := func(r *regtest.Replica, started func()) {
		cl := &client{replica: r}
		mu.Lock()
		clients = append(clients, cl)
		mu.Unlock()
		wg.Go(func() {
			cl.res = getBlob(ctx, &http.Client{Transport: &http.Transport{}}, blobURL(r.URL, img.Repo, d), d, started)
		})
	}
	firstBytes := make(chan struct{})
	var once sync.Once
	// Replica 0 leads (its client is the first), replica 1 follows, and
	// replica 2 gets its request once the leader is frozen.
	a, b, third := s.c.Replicas[0], s.c.Replicas[1], s.c.Replicas[2]
	launch(a, func() { once.Do(func() { close(firstBytes) }) })
	lead := leader(ctx, t, s.c)
	if lead != a {
		t.Fatalf("replica %d leads the fill, want %d (its only client's)", lead.Index, a.Index)
	}
	select {
	case <-firstBytes:
	case <-ctx.Done():
		t.Fatal("no bytes of the fill")
	}
	launch(b, nil)
	if err := s.link.WaitHeld(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Replica 1 streams from the leader before it freezes.
	if err := regtest.Poll(ctx, func(ctx context.Context) error {
		if f, err := b.Metric(ctx, "content_cache_fills_followed_total"); err != nil || f < 1 {
			return fmt.Errorf("replica 1 follows %v fills (%v), want 1", f, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := lead.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = lead.Cont()
		}
	}()
	s.link.Release()
	// A request on replica 2 while the frozen leader still holds the
	// lease: it takes the lease over once it expires.
	launch(third, nil)
	if err := regtest.Poll(ctx, func(ctx context.Context) error {
		if n, err := third.Metric(ctx, "content_cache_lease_takeovers_total"); err != nil || n < 1 {
			return fmt.Errorf("replica 2: %v lease takeovers (%v), want 1", n, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Replica 1's clients were cut when the lease went (or finished);
	// one more there is served, from the new fill or the storage.
	launch(b, nil)
	drv := st.NewDriver(t)
	if err := waitStoredBlob(ctx, st, drv, d); err != nil {
		t.Fatal(err)
	}
	// The leader wakes past its lease.
	if err := lead.Cont(); err != nil {
		t.Fatal(err)
	}
	stopped = false
	wg.Wait()
	mu.Lock()
	for i, cl := range clients {
		r := cl.res
		if r.completeWrong(size) {
			t.Errorf("client %d on replica %d: a complete-looking wrong body: %s", i, cl.replica.Index, r)
		}
		t.Logf("client %d on replica %d: %s", i, cl.replica.Index, r)
	}
	mu.Unlock()
	// Whatever the woken leader does with its fill, what every replica
	// serves, and what the storage holds, verifies: now, and once every
	// fill has ended.
	if err := regtest.Poll(ctx, func(ctx context.Context) error {
		if n := sumMetric(ctx, t, s.c, "content_cache_fills_in_flight"); n != 0 {
			return fmt.Errorf("%v fills in flight", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.c.Replicas {
		if res := getBlob(ctx, nil, blobURL(r.URL, img.Repo, d), d, nil); !res.ok(size) {
			t.Errorf("replica %d after SIGCONT: %s", r.Index, res)
		}
	}
	if err := verifyStored(ctx, st, drv, d); err != nil {
		t.Fatal(err)
	}
}

// TestReplicaProcessesRedisKilled: Redis is killed (SIGKILL) under a
// steady load of pulls through haproxy, with a long fill in flight, and
// started again (empty). No pull fails; every replica reports the
// fallback (content_cache_cluster_fallback 1) and goes back by itself
// once Redis answers; and cluster mode resumes: concurrent misses of a new
// blob over the replicas make one GET at the origin again.
func TestReplicaProcessesRedisKilled(t *testing.T) {
	var imgs []regtest.Image
	for i := range 12 {
		img := regtest.RandomImage(int64(2130+i), 2, 256<<10)
		img.Repo = fmt.Sprintf("replicas/redis%d", i)
		imgs = append(imgs, img)
	}
	big := regtest.RandomImage(2160, 1, 6<<20)
	big.Repo = "replicas/big"
	after := regtest.RandomImage(2161, 1, 4<<20)
	after.Repo = "replicas/after"
	// Rate per body: a small layer takes a quarter of a second, the big
	// one six seconds.
	s := startReplicaSetup(t, regtest.Filesystem(t), regtest.SlowLinkOptions{Rate: 1 << 20, HoldAt: -1}, "2s", false, nil,
		append(imgs, big, after)...)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	load := startPullLoad(ctx, s.c.URL(), imgs, 4, 1<<30)
	defer load.finish()
	if err := load.waitPulls(ctx, 0, 4); err != nil {
		t.Fatal(err)
	}
	// A long fill in flight across the outage, led by replica 0 and
	// followed by the others.
	bigD := digest.FromBytes(big.Layers[0])
	bigSize := int64(len(big.Layers[0]))
	bigResults := make([]blobResult, len(s.c.Replicas))
	var bigWG sync.WaitGroup
	for i, r := range s.c.Replicas {
		bigWG.Go(func() {
			bigResults[i] = getBlob(ctx, &http.Client{Transport: &http.Transport{}}, blobURL(r.URL, big.Repo, bigD), bigD, nil)
		})
		if i == 0 {
			if err := regtest.Poll(ctx, func(ctx context.Context) error {
				if s.originGETs(big.Repo, bigD) == 0 {
					return errors.New("the big blob's fill has not started")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := regtest.Poll(ctx, func(ctx context.Context) error {
		if f := sumMetric(ctx, t, s.c, "content_cache_fills_followed_total"); f < 2 {
			return fmt.Errorf("%v fills followed, want 2 (the big blob's)", f)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	s.redis.Kill()
	for _, r := range s.c.Replicas {
		if err := regtest.Poll(ctx, func(ctx context.Context) error {
			if v, err := r.Metric(ctx, "content_cache_cluster_fallback"); err != nil || v != 1 {
				return fmt.Errorf("replica %d: fallback %v %v, want 1", r.Index, v, err)
			}
			return nil
		}, r.Proc); err != nil {
			t.Fatal(err)
		}
	}
	// Pulls go on while Redis is down, hits and misses.
	if err := load.waitPulls(ctx, load.ok.Load(), 8); err != nil {
		t.Fatal(err)
	}
	s.redis.Restart()
	for _, r := range s.c.Replicas {
		if err := regtest.Poll(ctx, func(ctx context.Context) error {
			if v, err := r.Metric(ctx, "content_cache_cluster_fallback"); err != nil || v != 0 {
				return fmt.Errorf("replica %d: fallback %v %v, want 0", r.Index, v, err)
			}
			return nil
		}, r.Proc); err != nil {
			t.Fatal(err)
		}
	}
	if err := load.waitPulls(ctx, load.ok.Load(), 4); err != nil {
		t.Fatal(err)
	}
	bigWG.Wait()
	for i, r := range bigResults {
		if !r.ok(bigSize) {
			t.Errorf("the fill in flight across the outage, client on replica %d: %s", i, r)
		}
	}
	if got := s.originGETs(big.Repo, bigD); got != 1 {
		t.Errorf("the fill in flight across the outage made %d GETs at the origin, want 1", got)
	}
	load.finish()
	t.Logf("%d pulls, %d failed", load.ok.Load(), load.failed.Load())
	if n := load.failed.Load(); n != 0 {
		t.Errorf("%d pulls failed while Redis was killed and restarted:", n)
		for _, err := range load.errs {
			t.Error(err)
		}
	}
	if errs := sumMetric(ctx, t, s.c, "content_cache_redis_errors_total"); errs == 0 {
		t.Error("content_cache_redis_errors_total stayed 0 while Redis was down")
	}
	// Cluster mode again: 9 concurrent misses of a new blob over the
	// replicas, one GET at the origin.
	d := digest.FromBytes(after.Layers[0])
	size := int64(len(after.Layers[0]))
	var wg sync.WaitGroup
	results := make([]blobResult, 9)
	for i := range results {
		wg.Go(func() {
			r := s.c.Replicas[i%len(s.c.Replicas)]
			results[i] = getBlob(ctx, &http.Client{Transport: &http.Transport{}}, blobURL(r.URL, after.Repo, d), d, nil)
		})
	}
	wg.Wait()
	for i, r := range results {
		if !r.ok(size) {
			t.Errorf("client %d after Redis came back: %s", i, r)
		}
	}
	if got := s.originGETs(after.Repo, d); got != 1 {
		t.Fatalf("after Redis came back, %d concurrent misses over the replicas made %d GETs at the origin, want 1", len(results), got)
	}
}

// TestReplicaProcessLeaseTakenAfterRedisLostIt: Redis restarts empty
// while replica 0 leads a fill (held at the link), and replica 2 gets a
// request for the same blob before replica 0 renews its lease (a 30 s
// lease is renewed every 10 s): replica 2 finds no lease, takes it, and
// fetches too. Replica 0, finding its lease held by another at its next
// renewal without having stalled, goes on with its fill: its client gets
// the verified blob, not an aborted response (Redis losing its data fails
// no request one node could answer).
func TestReplicaProcessLeaseTakenAfterRedisLostIt(t *testing.T) {
	img := regtest.RandomImage(2126, 1, 4<<20)
	img.Repo = "replicas/redislost"
	other := regtest.RandomImage(2127, 1, 64<<10)
	other.Repo = "replicas/redislost-other"
	st := regtest.Filesystem(t)
	s := startReplicaSetup(t, st, regtest.SlowLinkOptions{Rate: 16 << 20, HoldAt: 1 << 20}, "30s", true, nil, img, other)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	d := digest.FromBytes(img.Layers[0])
	size := int64(len(img.Layers[0]))
	a, c := s.c.Replicas[0], s.c.Replicas[2]
	var results [2]blobResult
	var wg sync.WaitGroup
	wg.Go(func() {
		results[0] = getBlob(ctx, &http.Client{Transport: &http.Transport{}}, blobURL(a.URL, img.Repo, d), d, nil)
	})
	if lead := leader(ctx, t, s.c); lead != a {
		t.Fatalf("replica %d leads the fill, want 0 (its only client's)", lead.Index)
	}
	if err := s.link.WaitHeld(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s.redis.Restart()
	// Replica 2 talks to the new Redis (a request of another blob, small
	// enough for the link not to hold it), and is in cluster mode.
	od := digest.FromBytes(other.Layers[0])
	if res := getBlob(ctx, nil, blobURL(c.URL, other.Repo, od), od, nil); !res.ok(int64(len(other.Layers[0]))) {
		t.Fatalf("replica 2, another blob: %s", res)
	}
	if err := regtest.Poll(ctx, func(ctx context.Context) error {
		if v, err := c.Metric(ctx, "content_cache_cluster_fallback"); err != nil || v != 0 {
			return fmt.Errorf("replica 2: fallback %v %v, want 0", v, err)
		}
		return nil
	}, c.Proc); err != nil {
		t.Fatal(err)
	}
	ledBefore, err := c.Metric(ctx, "content_cache_fills_led_total")
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() {
		results[1] = getBlob(ctx, &http.Client{Transport: &http.Transport{}}, blobURL(c.URL, img.Repo, d), d, nil)
	})
	if err := regtest.Poll(ctx, func(ctx context.Context) error {
		if v, err := c.Metric(ctx, "content_cache_fills_led_total"); err != nil || v != ledBefore+1 {
			return fmt.Errorf("replica 2 leads %v fills (%v), want %v: it took the lease Redis lost", v, err, ledBefore+1)
		}
		return nil
	}, c.Proc); err != nil {
		t.Fatal(err)
	}
	// Replica 0's next renewal finds the lease held by replica 2.
	if line, err := a.Proc.Out.WaitFor(ctx, "fill lease", "another replica"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("replica 0: %s", line)
	}
	s.link.Release()
	wg.Wait()
	for i, r := range results {
		if !r.ok(size) {
			t.Errorf("client %d (replica %d): %s", i, []int{0, 2}[i], r)
		}
	}
	drv := st.NewDriver(t)
	if err := waitStoredBlob(ctx, st, drv, d); err != nil {
		t.Fatal(err)
	}
	t.Logf("origin GETs of the blob: %d (one per replica that held the lease)", s.originGETs(img.Repo, d))
}

// listingCounter is a proxy in front of the object store that records the
// sweeps' bucket listings (ListObjectsV2 of the pull records' root) of one
// replica, with their times.
type listingCounter struct {
	URL string
	mu  sync.Mutex
	at  []time.Time
}

// sweepPrefix is the prefix a sweep lists: the pull records' root (see
// downstream/internal/expiry/records.go), as distribution's s3 driver
// walks it.
const sweepPrefix = "content-cache/v1/pulls/"

func newListingCounter(t *testing.T, target string) *listingCounter {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l := &listingCounter{}
	proxy := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if r.Method == http.MethodGet && q.Get("list-type") == "2" && q.Get("prefix") == sweepPrefix {
			l.mu.Lock()
			l.at = append(l.at, time.Now())
			l.mu.Unlock()
		}
		// The Host header stays the one the client signed.
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	l.URL = srv.URL
	return l
}

// since counts the listings at or after t.
func (l *listingCounter) since(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, at := range l.at {
		if !at.Before(t) {
			n++
		}
	}
	return n
}

// TestReplicaProcessesExpiryOneSweep: three replicas on versitygw with a
// blobttl of 2 s (a sweep interval of 1 s) list the bucket's pull records
// once per interval between them, not once each; and a pull on one
// replica, held in flight by a slow reader while the blob is expired and
// sweeps run on the other replicas, completes verified, the blob kept
// until it ends, then removed.
func TestReplicaProcessesExpiryOneSweep(t *testing.T) {
	img := regtest.RandomImage(2125, 1, 16<<20)
	img.Repo = "replicas/expiry"
	st := regtest.StartS3(t)
	origin := regtest.StartOrigin(t, nil)
	if err := regtest.Push(t.Context(), origin.URL, "", "", img); err != nil {
		t.Fatal(err)
	}
	redis := regtest.StartRedis(t)
	var counters []*listingCounter
	for range 3 {
		counters = append(counters, newListingCounter(t, st.Server.URL))
	}
	c := regtest.StartCluster(t, regtest.ClusterOptions{
		Storage: st, Upstream: origin.URL, NoLB: true,
		Options: map[string]any{"blobttl": "2s", "redis": map[string]any{"addr": redis.Addr, "leasettl": "2s"}},
		Configure: func(i int, config map[string]any) {
			config["storage"].(map[string]any)["s3"].(map[string]any)["regionendpoint"] = counters[i].URL
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	const interval = time.Second // expiry.Interval(2s)
	d := digest.FromBytes(img.Layers[0])
	size := int64(len(img.Layers[0]))
	b := c.Replicas[1]
	if res := getBlob(ctx, nil, blobURL(b.URL, img.Repo, d), d, nil); !res.ok(size) {
		t.Fatalf("first pull on replica B: %s", res)
	}
	drv := st.NewDriver(t)
	if err := waitStoredBlob(ctx, st, drv, d); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(st.Server.Dir, "docker/registry/v2/blobs/sha256", d.Encoded()[:2], d.Encoded(), "data")
	// A pull on B that stays in flight: its client reads a little, then
	// waits; the server blocks writing the rest.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, blobURL(b.URL, img.Repo, d), nil)
	resp, err := regtest.SlowReaderClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the held pull: %s", resp.Status)
	}
	v := d.Verifier()
	got, err := io.CopyN(v, resp.Body, 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	pulled := time.Now()
	// Sweeps on the other replicas while the blob is expired (blobttl
	// and a tenth past the pull) and B's pull is in flight.
	expired := pulled.Add(2200 * time.Millisecond)
	others := func(at time.Time) int {
		n := 0
		for i, l := range counters {
			if i != b.Index {
				n += l.since(at)
			}
		}
		return n
	}
	if err := regtest.Poll(ctx, func(context.Context) error {
		if time.Now().Before(expired) {
			return errors.New("not expired yet")
		}
		if n := others(expired.Add(interval)); n < 2 {
			return fmt.Errorf("%d sweeps on the other replicas since the blob expired, want 2", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(data); err != nil {
		t.Fatalf("the blob's data went while replica B served it: %v", err)
	}
	n, err := io.Copy(v, resp.Body)
	if err != nil || got+n != size || !v.Verified() {
		t.Fatalf("B's pull during the sweeps: %d bytes, %v, verified %v; want the whole blob", got+n, err, v.Verified())
	}
	resp.Body.Close()
	// Nobody serves it now: a sweep removes it.
	if err := regtest.Poll(ctx, func(context.Context) error {
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			return fmt.Errorf("the blob is still stored (%v)", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// One sweep per interval cluster-wide: the next 7 listings, by any
	// replica, span at least 6 intervals less the time one sweep takes
	// to reach its listing (a sweep begins when it takes the lease, which
	// lasts the interval). Three replicas sweeping each would list 7 times
	// in about 2 intervals.
	start := time.Now()
	const want = 7
	var at []time.Time
	if err := regtest.Poll(ctx, func(context.Context) error {
		at = at[:0]
		for _, l := range counters {
			l.mu.Lock()
			for _, x := range l.at {
				if !x.Before(start) {
					at = append(at, x)
				}
			}
			l.mu.Unlock()
		}
		if len(at) < want {
			return fmt.Errorf("%d sweep listings since %s, want %d", len(at), start.Format("15:04:05.000"), want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(at, func(x, y time.Time) int { return x.Compare(y) })
	span := at[want-1].Sub(at[0])
	per := make([]int, len(counters))
	for i, l := range counters {
		per[i] = l.since(start)
	}
	t.Logf("%d sweep listings spanning %v (per replica since %s: %v)", want, span, start.Format("15:04:05.000"), per)
	if min := (want-1)*interval - 1500*time.Millisecond; span < min {
		t.Errorf("%d sweep listings of %d replicas within %v, want at least %v: one sweep per interval (%v) cluster-wide", want, len(c.Replicas), span, min, interval)
	}
}
