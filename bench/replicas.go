package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// The replicas scenario: three content-cache replicas and three of
// distribution's proxies, each set on one bucket of its own in versitygw
// and behind its own haproxy (the same configuration as the tests':
// round-robin, health-checked on /). content-cache's replicas share Redis
// (the redis option) unless -replicas-redis=false. With -base-bin or
// -base-rev, a third set runs the base binary (A/B). The sets reach the
// origin across the emulated WAN (a shaper of the scenario's own, one link
// for all), as a cache near its users reaches a far origin; the clients
// reach haproxy on loopback. For each number of clients, a fresh image is
// pulled cold by one client, then another fresh image by all the clients
// at once, from the load generator's process (loadgen.go); the origin's
// log counts the fetches.

// replicaSet is one set of replicas behind haproxy.
type replicaSet struct {
	label string
	procs []*proc
	lb    *regtest.LoadBalancer
	cmd   *exec.Cmd // haproxy
	// shared are the processes every set uses: versitygw, and
	// redis-server when it runs.
	shared []int
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
	load0 := loadAvg()
	dir := filepath.Join(b.work, "replicas")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	type setKind struct{ label, kind, bucket, bin string }
	kinds := []setKind{
		{"content-cache ×3", kindCache, "replicas-cache", b.o.bin},
		{"distribution proxy ×3", kindProxy, "replicas-proxy", b.o.bin},
	}
	if !b.o.replicasProxy {
		kinds = kinds[:1]
	}
	if b.base != "" && b.o.replicasBase {
		kinds = append(kinds, setKind{"content-cache ×3 (base)", kindCache, "replicas-base", b.base})
	}
	var buckets []string
	for _, k := range kinds {
		buckets = append(buckets, k.bucket)
	}
	store, err := startObjectStore(ctx, b.o.versitygw, dir, buckets)
	if err != nil {
		return err
	}
	defer store.close()

	upstream, link := b.origin.addr, "on loopback"
	if b.o.replicasWAN {
		sh, err := NewShaper(b.origin.addr, b.o.wanDelay, b.o.wanMbit*1e6)
		if err != nil {
			return err
		}
		defer sh.Close()
		upstream = sh.Addr
		link = fmt.Sprintf("across the emulated WAN (%v round trip, %.0f Mbit/s shared)", 2*b.o.wanDelay, b.o.wanMbit)
	}

	redisAddr, redisPid := "", 0
	if b.o.replicasRedis {
		rbin, err := exec.LookPath("redis-server")
		if err != nil {
			return fmt.Errorf("-replicas-redis needs redis-server (Debian's redis-server): %w", err)
		}
		redisAddr = freeAddr()
		args, err := regtest.RedisArgs(redisAddr, dir)
		if err != nil {
			return err
		}
		redis, err := startDaemon(rbin, args, filepath.Join(dir, "redis.log"))
		if err != nil {
			return err
		}
		defer kill(redis)
		redisPid = redis.Process.Pid
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = regtest.Poll(pctx, (&regtest.Redis{Addr: redisAddr}).Ping)
		cancel()
		if err != nil {
			return fmt.Errorf("redis-server: %w", err)
		}
	}

	storage := func(bucket string) func(string, string) string {
		return func(string, string) string {
			return fmt.Sprintf("  s3:\n    region: us-east-1\n    regionendpoint: %s\n    bucket: %s\n    forcepathstyle: true\n    secure: false\n    accesskey: %s\n    secretkey: %s\n  redirect: {disable: true}\n",
				store.direct, bucket, s3AccessKey, s3SecretKey)
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
	for _, kind := range kinds {
		set := &replicaSet{label: kind.label, shared: []int{store.cmd.Process.Pid}}
		if redisPid > 0 {
			set.shared = append(set.shared, redisPid)
		}
		sets = append(sets, set)
		cacheOptions := ""
		if redisAddr != "" {
			// A key prefix per set: the base set's replicas must not join
			// the other set's fills.
			cacheOptions = fmt.Sprintf("        redis: {addr: %q, keyprefix: %q}\n", redisAddr, kind.bucket+"/")
		}
		var backends []string
		for i := range 3 {
			name := fmt.Sprintf("%s-%d", kind.bucket, i)
			p, err := startProc(ctx, b.hc, procSpec{bin: kind.bin, dir: b.work, name: name, kind: kind.kind,
				htpasswd: filepath.Join(b.work, "htpasswd"), upstream: upstream, storage: storage(kind.bucket),
				tls: b.tls, cacheOptions: cacheOptions, output: keepLog(b.o.keep, dir, name)})
			if err != nil {
				return err
			}
			b.procs = append(b.procs, p)
			set.procs = append(set.procs, p)
			backends = append(backends, p.addr)
		}
		addr, stats := freeAddr(), freeAddr()
		cfg, err := regtest.HAProxyConfig(addr, stats, backends, regtest.LBOptions{TCP: b.o.replicasLB == "tcp"})
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
	for _, set := range sets {
		var pids []int
		for _, p := range set.procs {
			pids = append(pids, p.pid())
		}
		logf("replicas: %s: pids %v, haproxy %d", set.label, pids, set.cmd.Process.Pid)
	}
	logf("replicas: %d sets of 3 (content-cache with redis %v, distribution proxies) on versitygw, each behind haproxy, the origin %s", len(sets), b.o.replicasRedis, link)

	layers := b.o.imageLayers
	layer := int(b.o.replicasImageSize) / layers
	s := series{}
	for _, n := range b.o.replicasClients {
		for r := range b.o.replicasRepeats {
			for _, set := range rotateSets(sets, r) {
				logf("replicas: %s, %d clients, repeat %d/%d", set.label, n, r+1, b.o.replicasRepeats)
				one, err := b.replicaPulls(ctx, set, 1, layers, layer)
				if err != nil {
					return err
				}
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
				s.add(key+" wall", slices.Max(all.times))
				s.add(key+" one origin span", one.up.blobSpan().Seconds())
				s.add(key+" origin span", all.up.blobSpan().Seconds())
				s.add(key+" replicas cpu", all.replicas.Seconds())
				s.add(key+" haproxy cpu", all.haproxy.Seconds())
				s.add(key+" loadgen cpu", all.loadgen.Seconds())
				s.add(key+" harness cpu", all.harness.Seconds())
				s.add(key+" shared cpu", all.shared.Seconds())
				s.add(key+" host busy", all.host.share())
				for _, ph := range []struct {
					name string
					one  float64
					all  []float64
				}{
					{"manifest", one.res.Manifest[0], all.res.Manifest},
					{"config", one.res.Config[0], all.res.Config},
					{"first byte", one.res.FirstByte[0], all.res.FirstByte},
					{"last start", one.res.LastStart[0], all.res.LastStart},
					{"end", one.times[0], all.times},
				} {
					s.add(key+" one "+ph.name, ph.one)
					s.add(key+" p99 "+ph.name, percentile(ph.all, 99))
				}
			}
		}
	}
	load1 := loadAvg()
	cell := func(key string, f func(float64) string) string {
		if len(s[key]) < 2 {
			return f(s.med(key))
		}
		return f(s.med(key)) + " (" + spread(s[key], f) + ")"
	}
	count := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	t := &table{head: []string{"", "clients", "one client's cold pull", "p50", "p99", "p99 / one client", "origin blob GETs per blob", "bytes from the origin"},
		align: []string{"l", "r", "r", "r", "r", "r", "r", "r"}}
	cpu := &table{head: []string{"", "clients", "burst (last pull's end)", "CPUs busy", "3 replicas", "haproxy", "versitygw and Redis", "load generator", "harness (the WAN shaper)", "all ÷ CPUs", "1.3 × one client's pull"},
		align: []string{"l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"}}
	phases := &table{head: []string{"", "clients", "manifest", "config", "first layer byte", "last layer's first byte", "last byte", "the origin's blob GETs"},
		align: []string{"l", "r", "r", "r", "r", "r", "r", "r"}}
	ncpu := float64(runtime.NumCPU())
	for _, n := range b.o.replicasClients {
		for _, set := range sets {
			key := fmt.Sprintf("%s %d", set.label, n)
			t.row(set.label, fmt.Sprint(n), cell(key+" one", fmtSec), cell(key+" p50", fmtSec), cell(key+" p99", fmtSec),
				cell(key+" p99/one", fmtRatio), cell(key+" fetches per blob", count), cell(key+" origin bytes", fmtBytes))
			cpu.row(set.label, fmt.Sprint(n), fmtSec(s.med(key+" wall")), fmt.Sprintf("%.2f of %.0f", s.med(key+" host busy")*ncpu, ncpu),
				fmtSec(s.med(key+" replicas cpu")), fmtSec(s.med(key+" haproxy cpu")), fmtSec(s.med(key+" shared cpu")), fmtSec(s.med(key+" loadgen cpu")), fmtSec(s.med(key+" harness cpu")),
				fmtSec((s.med(key+" replicas cpu")+s.med(key+" haproxy cpu")+s.med(key+" shared cpu")+s.med(key+" loadgen cpu")+s.med(key+" harness cpu"))/ncpu), fmtSec(1.3*s.med(key+" one")))
			for _, w := range []string{"one", "p99"} {
				label := "1 (the reference)"
				if w == "p99" {
					label = fmt.Sprintf("%d (p99)", n)
				}
				var cells []string
				for _, ph := range []string{"manifest", "config", "first byte", "last start", "end"} {
					cells = append(cells, fmtSec(s.med(key+" "+w+" "+ph)))
				}
				span := key + " origin span"
				if w == "one" {
					span = key + " one origin span"
				}
				cells = append(cells, fmtSec(s.med(span)))
				phases.row(append([]string{set.label, label}, cells...)...)
			}
		}
	}
	redis := "no Redis (each replica coalesces only its own requests)"
	if b.o.replicasRedis {
		redis = "Redis (the `redis` option)"
	}
	fmt.Fprintf(&b.md, "### Replicas: %d-layer image (%s) pulled cold by many clients through haproxy, the origin %s\n\n%s\n",
		layers, fmtBytes(float64(layers*layer)), link, t)
	lb := "balancing connections, the kernel splicing the bytes between sockets (`mode tcp`, `option splice-auto`; the deployed `configs/haproxy-replicated.cfg` is `mode tcp` too, passing TLS through)"
	if b.o.replicasLB == "http" {
		lb = "balancing requests (`mode http`, haproxy copying every byte)"
	}
	fmt.Fprintf(&b.md, "Three content-cache replicas with %s, and three of distribution's proxies, each set sharing one versitygw bucket behind its own haproxy "+
		"(round-robin, health check on `/`, %s), reaching the origin %s; the clients reach haproxy on loopback, the replicas reach versitygw directly. "+
		"Each row: one client pulls a fresh image cold (the reference), then all the clients pull another fresh image at once, "+
		"as dockerd and containerd do (manifest by tag, config, then the layers %d at a time), each with connections of its own, from one load-generator process. "+
		"A pull ends with its last byte; every body's length is checked, and the digests of every %dth client's bodies (hashing is each client's own CPU, on its own host). "+
		"p50 and p99 over the clients; origin GETs per blob: blob GETs the origin served / (layers + config). "+
		"Repeats: %d (medians, per-repeat range in brackets). Load average (1, 5, 15 min) at the start: %s; at the end: %s.\n\n",
		redis, lb, link, pullJobs, b.o.replicasVerify, b.o.replicasRepeats, load0, load1)
	fmt.Fprintf(&b.md, "#### Where the CPU of the bursts went (medians)\n\n%s\n3 replicas, haproxy, versitygw and Redis: their processes (/proc/PID/stat); load generator: its process (wait4); "+
		"harness: the bench's own process, the WAN shaper's copies most of it (getrusage); CPUs busy: the machine's busy time (/proc/stat) over the burst's time. "+
		"All ÷ CPUs: the shortest the burst could take on this machine with nothing else running, all parts' CPU being needed on its %d CPUs; "+
		"when it exceeds 1.3 × one client's pull, the target cannot be met here whatever the cache does.\n\n", cpu, int(ncpu))
	fmt.Fprintf(&b.md, "#### Where the clients waited (seconds from the start; medians over the repeats)\n\n%s\nEach phase's end for the one client, and the 99th percentile over the clients of the burst: "+
		"the manifest's last byte, the config's, the first byte of any layer, the first byte of the last layer to start, the pull's last byte; "+
		"the origin's blob GETs: from the start of the first to the end of the last, as the origin logged them (the fills' time across the WAN).\n\n", phases)
	for _, n := range b.o.replicasClients {
		key := fmt.Sprintf("%s %d", sets[0].label, n)
		f, p := s.max(key+" fetches per blob"), s.med(key+" p99/one")
		b.addGoal(fmt.Sprintf("replicas, %d clients: origin fetches per blob through 3 content-cache replicas", n), fmt.Sprintf("%.2f (the most of any repeat)", f),
			spread(s[key+" fetches per blob"], count), "= 1", f == 1, !math.IsNaN(f))
		b.addGoal(fmt.Sprintf("replicas, %d clients: p99 pull time / one client's cold pull, origin %s", n, link), fmtRatio(p), spread(s[key+" p99/one"], fmtRatio), "≤ 1.3×", p <= 1.3, !math.IsNaN(p))
		if len(sets) > 2 {
			base := fmt.Sprintf("%s %d", sets[2].label, n)
			var ab []float64
			for i := range s[key+" p99"] {
				ab = append(ab, s[key+" p99"][i]/s[base+" p99"][i])
			}
			fmt.Fprintf(&b.md, "A/B, %d clients: p99 new/base %s (per repeat %s).\n\n", n, fmtRatio(median(ab)), spread(ab, fmtRatio))
		}
	}
	return nil
}

// keepLog is where a replica's output is kept with -keep ("": nowhere).
func keepLog(keep bool, dir, name string) string {
	if !keep {
		return ""
	}
	return filepath.Join(dir, name+".log")
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], ", ")
}

func rotateSets(ss []*replicaSet, r int) []*replicaSet {
	r %= len(ss)
	return append(slices.Clone(ss[r:]), ss[:r]...)
}

// replicaRun is what n concurrent pulls of one fresh image did.
type replicaRun struct {
	times    []float64 // seconds, one per client
	up       upstreamCount
	res      loadgenResult
	replicas time.Duration // CPU of the set's registries
	haproxy  time.Duration // CPU of the set's haproxy
	loadgen  time.Duration // CPU of the load generator
	harness  time.Duration // CPU of the bench's own process (the shaper)
	shared   time.Duration // CPU of versitygw and redis-server
	host     hostCPU       // the machine's CPU during the pulls
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
	var run replicaRun
	up, err := b.measure(ctx, func() error {
		var pids []int
		for _, p := range set.procs {
			pids = append(pids, p.pid())
		}
		hap := []int{set.cmd.Process.Pid}
		cpu0, hap0, self0, shared0 := pidsCPU(pids), pidsCPU(hap), selfCPU(), pidsCPU(set.shared)
		host0, _ := readHostCPU()
		res, lg, err := runLoadgen(ctx, loadgenSpec{base: set.url(), ref: img.Repo + ":" + img.Tag, clients: n, verify: b.o.replicasVerify, deadline: 30 * time.Minute})
		if err != nil {
			return fmt.Errorf("%s, %d clients: %w", set.label, n, err)
		}
		host1, _ := readHostCPU()
		run.res, run.times, run.loadgen = res, res.Seconds, lg
		run.replicas, run.haproxy, run.harness, run.host = pidsCPU(pids)-cpu0, pidsCPU(hap)-hap0, selfCPU()-self0, host1.sub(host0)
		run.shared = pidsCPU(set.shared) - shared0
		if want := int64(n) * int64(len(img.Config)+layers*layer); res.Bytes != want {
			return fmt.Errorf("%s: the clients got %d blob bytes, want %d", set.label, res.Bytes, want)
		}
		return nil
	})
	run.up = up
	return run, err
}

// pidsCPU is the CPU time the processes pids used so far (those gone
// count 0).
func pidsCPU(pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		if d, err := cpuTime(pid); err == nil {
			sum += d
		}
	}
	return sum
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
