package registry_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// pullLoad pulls images through base from several clients, over and over,
// until stopped, at most max pulls, or ctx ends: a steady load that a
// rolling restart must not fail. Every pull verifies every blob.
type pullLoad struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []error

	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func startPullLoad(ctx context.Context, base string, imgs []regtest.Image, clients int, max int64) *pullLoad {
	l := &pullLoad{stop: make(chan struct{})}
	transport := &http.Transport{MaxIdleConnsPerHost: clients}
	var started atomic.Int64
	for range clients {
		l.wg.Go(func() {
			for {
				n := started.Add(1)
				if n > max {
					return
				}
				select {
				case <-l.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				// The images in turn: each is cold the first time.
				img := imgs[int(n-1)%len(imgs)]
				c := &regtest.Client{Base: base, HTTP: &http.Client{Transport: transport}}
				if _, err := c.Pull(ctx, img.Repo, img.Tag); err != nil {
					if ctx.Err() != nil {
						return
					}
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Errorf("%s: %w", time.Now().Format("15:04:05.000"), err))
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

// waitPulls waits until n more pulls succeeded than before.
func (l *pullLoad) waitPulls(ctx context.Context, before, n int64) error {
	return regtest.Poll(ctx, func(context.Context) error {
		if got := l.ok.Load() - before; got < n {
			return fmt.Errorf("%d pulls done, want %d", got, n)
		}
		return nil
	})
}

// finish stops the load and waits for the pulls in flight.
func (l *pullLoad) finish() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// TestRollingRestart: three replicas on one storage behind haproxy, under
// a steady load of pulls, restarted one after the other as an orchestrator
// does (SIGTERM, wait for the exit, start again, wait until haproxy sees it
// up): not one pull fails, and each old process exits 0 (its drain
// finished in time). The pulls go over the images in turn, each cold the
// first time, from an origin on a slow line; each replica gets its SIGTERM
// while it runs a fill, which a stop without a drain would cut.
func TestRollingRestart(t *testing.T) {
	for _, storage := range []string{"filesystem", "s3"} {
		t.Run(storage, func(t *testing.T) { testRollingRestart(t, storage, nil) })
	}
	// The same with the redis option set on every replica: they coordinate
	// through a redis-server of the test's own.
	t.Run("s3+redis", func(t *testing.T) {
		redis := regtest.StartRedis(t)
		testRollingRestart(t, "s3", map[string]any{"redis": map[string]any{"addr": redis.Addr}})
	})
}

// testRollingRestart runs the rolling restart on storage, with the extra
// downstream options of options (nil: none) given the cluster's storage.
func testRollingRestart(t *testing.T, storage string, options map[string]any) {
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	origin := regtest.StartOrigin(t, nil)
	var imgs []regtest.Image
	for i := range 48 {
		img := regtest.RandomImage(int64(2110+i), 2, 512<<10)
		img.Repo = fmt.Sprintf("rolling/app%d", i)
		if err := regtest.Push(ctx, origin.URL, "", "", img); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	// A fill of one layer lasts half a second.
	link := regtest.NewSlowLink(t, origin.URL, regtest.SlowLinkOptions{Rate: 1 << 20, HoldAt: -1})
	st := regtest.Filesystem(t)
	if storage == "s3" {
		st = regtest.StartS3(t)
	}
	c := regtest.StartCluster(t, regtest.ClusterOptions{Storage: st, Upstream: link.URL, Options: options})
	load := startPullLoad(ctx, c.URL(), imgs, 4, 500)
	defer load.finish()
	for _, r := range c.Replicas {
		before := load.ok.Load()
		name := c.LB.Servers[r.Index]
		// SIGTERM while the replica fills a blob for a client.
		err := regtest.Poll(ctx, func(ctx context.Context) error {
			n, err := r.Metric(ctx, "content_cache_fills_in_flight")
			if err == nil && n == 0 {
				err = fmt.Errorf("replica %d runs no fill", r.Index)
			}
			return err
		}, r.Proc)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Terminate(ctx); err != nil {
			t.Fatalf("replica %d: exit after SIGTERM: %v", r.Index, err)
		}
		if err := c.LB.WaitState(ctx, "DOWN", name); err != nil {
			t.Fatal(err)
		}
		r.Start()
		if err := r.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.LB.WaitState(ctx, "UP", name); err != nil {
			t.Fatal(err)
		}
		// The load went on through the restart.
		if err := load.waitPulls(ctx, before, 2); err != nil {
			t.Fatal(err)
		}
	}
	load.finish()
	t.Logf("%d pulls, %d failed", load.ok.Load(), load.failed.Load())
	if n := load.failed.Load(); n != 0 {
		t.Errorf("%d pulls failed during the rolling restart:", n)
		for _, err := range load.errs {
			t.Error(err)
		}
	}
}

// TestReplicatedStackHAProxy checks the load balancer configuration of
// configs/docker-stack-replicated.yml with haproxy itself (`haproxy -c`),
// and that it takes a draining replica out and retries elsewhere: a health
// check on / and redispatch.
func TestReplicatedStackHAProxy(t *testing.T) {
	bin := "/usr/sbin/haproxy"
	if _, err := os.Stat(bin); err != nil {
		bin = regtest.Tool(t, "haproxy", "bin/haproxy")
	}
	cfg := filepath.Join(configsDir, "haproxy-replicated.cfg")
	out, err := exec.Command(bin, "-c", "-f", cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("haproxy -c -f %s: %v\n%s", cfg, err, out)
	}
	data, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"option httpchk GET /", "http-check expect status 200", "option redispatch", "balance roundrobin", "tasks.cache:443"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("%s lacks %q", cfg, want)
		}
	}
}
