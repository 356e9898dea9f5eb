package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// The replicas scenario: three content-cache replicas and three of
// distribution's proxies, each set on one bucket of its own in versitygw
// and behind its own haproxy (the same configuration as the tests':
// round-robin, health-checked on /). content-cache's replicas share Redis
// (the redis option) unless -replicas-redis=false. For each number of
// clients, a fresh image is pulled cold by one client, then another fresh
// image by all the clients at once; the origin's log counts the fetches.

// replicaSet is one set of replicas behind haproxy.
type replicaSet struct {
	label string
	procs []*proc
	lb    *regtest.LoadBalancer
	cmd   *exec.Cmd // haproxy
}

func (s *replicaSet) url() string { return s.lb.URL }

// haproxyBin is Debian's haproxy, or one on PATH.
func haproxyBin() (string, error) {
	if _, err := os.Stat("/usr/sbin/haproxy"); err == nil {
		return "/usr/sbin/haproxy", nil
	}
	return exec.LookPath("haproxy")
}

// startDaemon starts a helper process (haproxy, redis-server) that dies
// with the bench.
func startDaemon(name string, args []string, log string) (*exec.Cmd, error) {
	out, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	go func() { _ = cmd.Wait(); out.Close() }()
	return cmd, nil
}

func kill(cmd *exec.Cmd) {
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}

func (b *bench) replicasScenario(ctx context.Context) error {
	if b.tls != nil {
		b.notes = append(b.notes, "The replicas scenario runs without -tls (its haproxy speaks HTTP to the replicas): not run.")
		return nil
	}
	hap, err := haproxyBin()
	if err != nil {
		b.notes = append(b.notes, "The replicas scenario needs haproxy (Debian's haproxy): not run.")
		return nil
	}
	dir := filepath.Join(b.work, "replicas")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	store, err := startObjectStore(ctx, b.o.versitygw, dir, []string{"replicas-cache", "replicas-proxy"})
	if err != nil {
		return err
	}
	defer store.close()

	cacheOptions := ""
	if b.o.replicasRedis {
		rbin, err := exec.LookPath("redis-server")
		if err != nil {
			return fmt.Errorf("-replicas-redis needs redis-server (Debian's redis-server): %w", err)
		}
		addr := freeAddr()
		args, err := regtest.RedisArgs(addr, dir)
		if err != nil {
			return err
		}
		redis, err := startDaemon(rbin, args, filepath.Join(dir, "redis.log"))
		if err != nil {
			return err
		}
		defer kill(redis)
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = regtest.Poll(pctx, (&regtest.Redis{Addr: addr}).Ping)
		cancel()
		if err != nil {
			return fmt.Errorf("redis-server: %w", err)
		}
		cacheOptions = fmt.Sprintf("        redis: {addr: %q}\n", addr)
	}

	storage := func(bucket string) func(string, string) string {
		return func(string, string) string {
			return fmt.Sprintf("  s3:\n    region: us-east-1\n    regionendpoint: %s\n    bucket: %s\n    forcepathstyle: true\n    secure: false\n    accesskey: %s\n    secretkey: %s\n  redirect: {disable: true}\n",
				store.endpoint, bucket, s3AccessKey, s3SecretKey)
		}
	}
	var sets []*replicaSet
	defer func() {
		for _, s := range sets {
			kill(s.cmd)
			for _, p := range s.procs {
				p.stop()
				b.procs = slices.DeleteFunc(b.procs, func(q *proc) bool { return q == p })
			}
		}
	}()
	for _, kind := range []struct{ label, kind, bucket string }{
		{"content-cache ×3", kindCache, "replicas-cache"},
		{"distribution proxy ×3", kindProxy, "replicas-proxy"},
	} {
		set := &replicaSet{label: kind.label}
		sets = append(sets, set)
		var backends []string
		for i := range 3 {
			name := fmt.Sprintf("%s-%d", kind.bucket, i)
			p, err := startProc(ctx, b.hc, procSpec{bin: b.o.bin, dir: b.work, name: name, kind: kind.kind,
				htpasswd: filepath.Join(b.work, "htpasswd"), upstream: b.origin.addr, storage: storage(kind.bucket),
				tls: b.tls, cacheOptions: cacheOptions})
			if err != nil {
				return err
			}
			b.procs = append(b.procs, p)
			set.procs = append(set.procs, p)
			backends = append(backends, p.addr)
		}
		addr, stats := freeAddr(), freeAddr()
		cfg, err := regtest.HAProxyConfig(addr, stats, backends, regtest.LBOptions{})
		if err != nil {
			return err
		}
		cfgFile := filepath.Join(dir, kind.bucket+"-haproxy.cfg")
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
			return err
		}
		set.cmd, err = startDaemon(hap, []string{"-db", "-f", cfgFile}, filepath.Join(dir, kind.bucket+"-haproxy.log"))
		if err != nil {
			return err
		}
		set.lb = &regtest.LoadBalancer{Addr: addr, URL: "http://" + addr, StatsURL: "http://" + stats + "/stats;csv", Servers: []string{"r0", "r1", "r2"}}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = set.lb.WaitUp(wctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: haproxy: %w", kind.label, err)
		}
	}
	logf("replicas: 3 content-cache replicas (redis %v) and 3 distribution proxies on versitygw, each set behind haproxy", b.o.replicasRedis)

	layers := b.o.imageLayers
	layer := int(b.o.replicasImageSize) / layers
	s := series{}
	for _, n := range b.o.replicasClients {
		for r := range b.o.replicasRepeats {
			for _, set := range rotateSets(sets, r) {
				one, err := b.replicaPulls(ctx, set, 1, layers, layer)
				if err != nil {
					return err
				}
				logf("replicas: %s, %d clients, repeat %d/%d", set.label, n, r+1, b.o.replicasRepeats)
				all, err := b.replicaPulls(ctx, set, n, layers, layer)
				if err != nil {
					return err
				}
				key := fmt.Sprintf("%s %d", set.label, n)
				s.add(key+" one", one.times[0])
				s.add(key+" p50", percentile(all.times, 50))
				s.add(key+" p99", percentile(all.times, 99))
				s.add(key+" p99/one", percentile(all.times, 99)/one.times[0])
				s.add(key+" fetches per blob", float64(all.up.blobGets)/float64(layers+1))
				s.add(key+" origin bytes", float64(all.up.blobBytes))
			}
		}
	}
	t := &table{head: []string{"", "clients", "one client's cold pull", "p50", "p99", "p99 / one client", "origin blob GETs per blob", "bytes from the origin"},
		align: []string{"l", "r", "r", "r", "r", "r", "r", "r"}}
	for _, n := range b.o.replicasClients {
		for _, set := range sets {
			key := fmt.Sprintf("%s %d", set.label, n)
			t.row(set.label, fmt.Sprint(n), fmtSec(s.med(key+" one")), fmtSec(s.med(key+" p50")), fmtSec(s.med(key+" p99")),
				fmtRatio(s.med(key+" p99/one")), fmt.Sprintf("%.2f", s.med(key+" fetches per blob")), fmtBytes(s.med(key+" origin bytes")))
		}
	}
	redis := "no Redis (each replica coalesces only its own requests)"
	if b.o.replicasRedis {
		redis = "Redis (the `redis` option)"
	}
	fmt.Fprintf(&b.md, "### Replicas: %d-layer image (%s) pulled cold by many clients through haproxy\n\n%s\n", layers, fmtBytes(float64(b.o.replicasImageSize)), t)
	fmt.Fprintf(&b.md, "Three content-cache replicas with %s, and three of distribution's proxies, each set sharing one versitygw bucket behind its own haproxy "+
		"(round-robin, health check on `/`). Each row: one client pulls a fresh image cold (the reference), then all the clients pull another fresh image at once "+
		"(manifest, config and layers one after the other, each verified; the harness's Go client, in the bench's process). p50 and p99 over the clients; "+
		"origin GETs per blob: blob GETs the origin served / (layers + config). Repeats: %d (medians).\n\n", redis, b.o.replicasRepeats)
	for _, n := range b.o.replicasClients {
		key := fmt.Sprintf("%s %d", sets[0].label, n)
		f, p := s.max(key+" fetches per blob"), s.med(key+" p99/one")
		b.addGoal(fmt.Sprintf("replicas, %d clients: origin fetches per blob through 3 content-cache replicas", n), fmt.Sprintf("%.2f (the most of any repeat)", f),
			spread(s[key+" fetches per blob"], func(v float64) string { return fmt.Sprintf("%.2f", v) }), "= 1", f == 1, !math.IsNaN(f))
		b.addGoal(fmt.Sprintf("replicas, %d clients: p99 pull time / one client's cold pull", n), fmtRatio(p), spread(s[key+" p99/one"], fmtRatio), "≤ 1.3×", p <= 1.3, !math.IsNaN(p))
	}
	return nil
}

func rotateSets(ss []*replicaSet, r int) []*replicaSet {
	r %= len(ss)
	return append(slices.Clone(ss[r:]), ss[:r]...)
}

// replicaRun is what n concurrent pulls of one fresh image did.
type replicaRun struct {
	times []float64 // seconds, one per client
	up    upstreamCount
}

// replicaPulls pushes a fresh image to the origin and has n clients pull
// it at once through set's haproxy.
func (b *bench) replicaPulls(ctx context.Context, set *replicaSet, n, layers, layer int) (replicaRun, error) {
	seed := b.nextSeed()
	img := regtest.RandomImage(int64(seed), layers, layer)
	img.Repo, img.Tag = "bench/replicas", fmt.Sprintf("s%d", seed)
	if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img); err != nil {
		return replicaRun{}, fmt.Errorf("pushing the image: %w", err)
	}
	run := replicaRun{times: make([]float64, n)}
	errs := make([]error, n)
	up, err := b.measure(ctx, func() error {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				c := &regtest.Client{Base: set.url(), User: benchUser, Pass: benchPassword, HTTP: newHTTPClient()}
				<-start
				t0 := time.Now()
				_, errs[i] = c.Pull(ctx, img.Repo, img.Tag)
				run.times[i] = time.Since(t0).Seconds()
			})
		}
		close(start)
		wg.Wait()
		var failed []string
		for i, err := range errs {
			if err != nil {
				failed = append(failed, fmt.Sprintf("client %d: %v", i, err))
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("%s: %d of %d pulls failed: %s", set.label, len(failed), n, strings.Join(failed[:min(3, len(failed))], "; "))
		}
		return nil
	})
	run.up = up
	return run, err
}
