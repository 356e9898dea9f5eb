// Command bench measures content-cache side by side with the origin and with
// distribution's own pull-through cache, on loopback, and prints a markdown
// table.
//
// It runs the content-cache binary as separate processes, each with its own
// filesystem storage, TMPDIR and loopback port:
//
//   - origin: a plain distribution registry with htpasswd authentication;
//   - content-cache: the downstream middleware, upstream the origin;
//   - distribution proxy: the same binary with a proxy: block (remoteurl,
//     username, password), distribution's own pull-through cache.
//
// With -wan, a shaping TCP proxy (one-way delay and a bandwidth cap per
// direction) sits between a second pair of caches and the origin, and
// origin-direct requests for the WAN rows cross it too.
//
// Upstream fetches are counted from the origin's own log (distribution logs
// every 2xx answer with its method, URI and body size), so nothing sits in
// the data path to count them. Peak RSS and CPU time come from /proc, so the
// harness runs on Linux only.
//
//	make bench                                 # build, then go run ./bench with the defaults
//	go run ./bench -bin bin/content-cache -wan -out /tmp/bench.md
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/content-cache/content-cache/internal/regtest"
)

type options struct {
	bin, crane       string
	repeats          int
	blobSize         size
	relayListen      string
	relayUpstream    string
	relayDir         string
	ttfbSize         size
	concurrency      int
	concSize         size
	imageSize        size
	memoryLimit      memLimit
	memoryNote       string // what confineMemory did, for the header
	imageLayers      int
	rpsDuration      time.Duration
	rpsWorkers       int
	rssSize          size
	wan              bool
	wanDelay         time.Duration
	wanMbit          float64
	wanRepeats       int
	wanBlobSize      size
	bcryptCost       int
	out              string
	only             string
	cpuprofile       string
	profileSeconds   int
	keep             bool
	storage          string
	versitygw        string
	tls, http1       bool
	baseBin, baseRev string
	trace            bool
	wanImages        imageShapes
	wanTrace         bool
	commandLine      string
	scenarioSelected map[string]bool
	// The replicas scenario.
	replicasClients   []int
	replicasRepeats   int
	replicasImageSize size
	replicasRedis     bool
	replicasWAN       bool
	replicasVerify    int
	replicasBase      bool
	replicasProxy     bool
	replicasLB        string
	loadgen           loadgenSpec // internal: run as the replicas scenario's load generator
	warmBigSize       size
	warmDuration      time.Duration
	warmRepeats       int
	warmCells         string
	wanPerConn        float64
	floorSizes        sizes
	floorImage        bool
}

func main() {
	o := options{blobSize: 64 << 20, ttfbSize: 4 << 20, concSize: 32 << 20, imageSize: 8 * 18 << 20, memoryLimit: 4 << 30, rssSize: 1 << 30, wanBlobSize: 16 << 20, warmBigSize: 64 << 20,
		wanImages: imageShapes{{12, 512 << 10}, {8, 18 << 20}}}
	flag.StringVar(&o.bin, "bin", "bin/content-cache", "the content-cache binary (make build)")
	flag.StringVar(&o.crane, "crane", ".tools/bin/crane", "crane, for the image pulls (make tools); PATH is searched when missing")
	flag.IntVar(&o.repeats, "repeats", 7, "repeats of each scenario (medians are reported)")
	flag.Var(&o.blobSize, "blob-size", "size of the blob of the cold/warm blob scenario")
	flag.Var(&o.ttfbSize, "ttfb-size", "size of each blob of the cold time-to-first-byte scenario")
	flag.IntVar(&o.concurrency, "concurrency", 32, "concurrent GETs of one cold blob")
	flag.Var(&o.concSize, "conc-size", "size of the blob of the concurrent-miss scenario")
	flag.Var(&o.imageSize, "image-size", "total size of the image pulled with crane")
	flag.IntVar(&o.imageLayers, "image-layers", 8, "layers of the image pulled with crane")
	flag.DurationVar(&o.rpsDuration, "rps-duration", 2*time.Second, "duration of each manifest-by-tag rate measurement")
	flag.IntVar(&o.rpsWorkers, "rps-workers", 16, "concurrent clients of the manifest-by-tag rate measurement")
	flag.Var(&o.rssSize, "rss-size", "size of the blob streamed for the peak-RSS scenario (4GiB for the target)")
	flag.BoolVar(&o.wan, "wan", false, "also run the cold blob and the image pull across an emulated WAN link (shaping proxy)")
	flag.DurationVar(&o.wanDelay, "wan-delay", 25*time.Millisecond, "one-way delay of the emulated WAN (the round trip is twice this)")
	flag.Float64Var(&o.wanMbit, "wan-mbit", 100, "bandwidth cap of the emulated WAN in Mbit/s, per direction, shared by all connections")
	flag.Float64Var(&o.wanPerConn, "wan-per-conn", 25, "the wan-pull scenario also runs with this bandwidth cap per connection, in Mbit/s, as CDNs behind registries impose (0: only without)")
	flag.IntVar(&o.wanRepeats, "wan-repeats", 3, "repeats of the WAN scenarios")
	flag.Var(&o.wanImages, "wan-images", "images of the wan-pull scenario, comma-separated LAYERSxSIZE")
	flag.BoolVar(&o.wanTrace, "wan-trace", false, "wan-pull: also write the timeline (the cache's request lines and the origin's) of each cache's first pull of each image")
	flag.Var(&o.wanBlobSize, "wan-blob-size", "size of the blob of the cold blob scenario across the WAN")
	flag.IntVar(&o.bcryptCost, "bcrypt-cost", bcrypt.MinCost, "bcrypt cost of the origin's htpasswd entry (the origin checks it on every request)")
	flag.StringVar(&o.out, "out", "", "also write the markdown to this file")
	flag.StringVar(&o.only, "only", "", "comma-separated scenarios to run: warm-load,blob,ttfb,concurrent,manifest,image,wan-pull,pull-trace,rss,profile,storage,floor,replicas (default: all; pull-trace only with -trace or named here, profile only with -cpuprofile, storage only with -storage s3; replicas needs haproxy and redis-server)")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "run the profile scenario: CPU profiles of content-cache, distribution's proxy and the origin during back-to-back cold pulls, written to this directory (needs a binary with pprof on its debug server: go build -o bin/content-cache-pprof ./bench/pprofbin)")
	flag.IntVar(&o.profileSeconds, "profile-seconds", 8, "length of each CPU profile")
	flag.BoolVar(&o.keep, "keep", false, "keep the working directory (storage, configs, logs)")
	flag.StringVar(&o.storage, "storage", "filesystem", "the caches' storage: filesystem, or s3 (versitygw started by the harness; adds the storage scenario)")
	flag.StringVar(&o.versitygw, "versitygw", ".tools/bin/versitygw", "versitygw, for -storage s3 (make tools)")
	flag.BoolVar(&o.tls, "tls", false, "every registry (origin, caches) serves HTTPS with a certificate of a CA the harness makes; the caches reach the origin over HTTPS, and crane and the harness trust the CA")
	flag.Var(&o.memoryLimit, "memory-limit", "run the harness and every registry, relay and client in a memory cgroup of this size, so that page cache is recycled within it (needs root; 0: unconfined). On a VM whose freed memory goes back to the host, a run whose page cache grows past what the host backs measured writes 30 times as costly")
	flag.BoolVar(&o.http1, "http1", false, "with -tls: the harness's own client speaks HTTP/1.1 (by default it takes HTTP/2 when offered, as crane does)")
	flag.StringVar(&o.baseBin, "base-bin", "", "A/B: also run this content-cache binary as \"content-cache (base)\", side by side in the same repeats of every scenario, with new/base ratios")
	flag.StringVar(&o.baseRev, "base-rev", "", "A/B: build the base binary from this git revision (git archive + go build into the working directory); instead of -base-bin")
	flag.StringVar(&o.relayListen, "relay-listen", "", "internal: run as the floor scenario's relay on this address")
	flag.StringVar(&o.relayUpstream, "relay-upstream", "", "internal: the relay's upstream")
	flag.StringVar(&o.relayDir, "relay-dir", "", "internal: where the relay keeps verified blobs")
	flag.BoolVar(&o.trace, "trace", false, "also run the pull-trace scenario (selected alone with -only pull-trace): a timeline of cold crane pulls from the registries' logs")
	replicasClients := flag.String("replicas-clients", "32,128", "replicas scenario: the numbers of concurrent clients, comma-separated")
	flag.IntVar(&o.replicasRepeats, "replicas-repeats", 1, "replicas scenario: repeats of each number of clients")
	o.replicasImageSize = 32 << 20
	flag.Var(&o.replicasImageSize, "replicas-image-size", "replicas scenario: total size of the image (-image-layers layers)")
	flag.BoolVar(&o.replicasRedis, "replicas-redis", true, "replicas scenario: the content-cache replicas coordinate through Redis (redis-server started by the harness)")
	flag.BoolVar(&o.replicasWAN, "replicas-wan", true, "replicas scenario: the replicas and proxies reach the origin across the emulated WAN (-wan-delay, -wan-mbit; its own shaper, -wan not needed); false: on loopback")
	flag.IntVar(&o.replicasVerify, "replicas-verify", 16, "replicas scenario: the load generator checks the digests of every Nth client's blobs (client 0 always; 1: all; 0: none); every body's length is checked")
	flag.StringVar(&o.replicasLB, "replicas-lb", "tcp", "replicas scenario: haproxy's mode, tcp (connections balanced, bytes spliced, as configs/haproxy-replicated.cfg) or http (requests balanced, haproxy copying every byte)")
	flag.BoolVar(&o.replicasProxy, "replicas-proxy", true, "replicas scenario: also the set of 3 distribution proxies (the comparison; at 128 clients across the WAN it fetches each blob about 100 times)")
	flag.BoolVar(&o.replicasBase, "replicas-base", true, "replicas scenario: with -base-bin or -base-rev, also a set of 3 replicas of the base binary (A/B)")
	flag.StringVar(&o.loadgen.base, "loadgen-base", "", "internal: run as the replicas scenario's load generator, pulling from this URL")
	flag.StringVar(&o.loadgen.ref, "loadgen-ref", "", "internal: the load generator's repo:tag")
	flag.IntVar(&o.loadgen.clients, "loadgen-clients", 1, "internal: the load generator's concurrent clients")
	flag.IntVar(&o.loadgen.verify, "loadgen-verify", 0, "internal: every Nth client of the load generator checks digests")
	flag.DurationVar(&o.loadgen.deadline, "loadgen-deadline", 30*time.Minute, "internal: the load generator gives up after this")
	flag.Var(&o.warmBigSize, "warm-size", "size of each of the 4 big blobs of the warm-load scenario")
	flag.DurationVar(&o.warmDuration, "warm-duration", 5*time.Second, "length of each wrk run of the warm-load scenario")
	flag.IntVar(&o.warmRepeats, "warm-repeats", 3, "repeats of the warm-load scenario")
	flag.StringVar(&o.warmCells, "warm-cells", "", "run only the warm-load measurements whose name contains this (e.g. \"4 KiB\", \"veth\", \"TLS\")")
	o.floorSizes = sizes{8 << 20, 64 << 20}
	flag.Var(&o.floorSizes, "floor-sizes", "floor scenario: the blob sizes pulled cold in each repeat, comma-separated; with two or more, CPU is also split into a cost per request and per MiB (the line through the smallest and the largest)")
	flag.BoolVar(&o.floorImage, "floor-image", true, "floor scenario: also pull an image with crane")
	flag.Parse()
	for _, f := range strings.Split(*replicasClients, ",") {
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(f), "%d", &n); err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -replicas-clients %q: expected numbers such as 32,128\n", *replicasClients)
			os.Exit(2)
		}
		o.replicasClients = append(o.replicasClients, n)
	}
	if o.replicasLB != "tcp" && o.replicasLB != "http" {
		fmt.Fprintf(os.Stderr, "bench: -replicas-lb %q: expected tcp or http\n", o.replicasLB)
		os.Exit(2)
	}
	if o.loadgen.base != "" {
		if err := loadgenMain(o.loadgen); err != nil {
			fmt.Fprintln(os.Stderr, "bench: load generator:", err)
			os.Exit(1)
		}
		return
	}
	if o.relayListen != "" {
		if err := relayMain(o.relayListen, o.relayUpstream, o.relayDir); err != nil {
			fmt.Fprintln(os.Stderr, "bench: relay:", err)
			os.Exit(1)
		}
		return
	}
	o.commandLine = commandLine()
	// Before any process starts: they inherit the cgroup. The default
	// limit is best effort (not root: unconfined, and the header says
	// so); a limit asked for on the command line must hold.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "memory-limit" })
	if note, err := confineMemory(int64(o.memoryLimit)); err == nil {
		o.memoryNote = note
	} else if explicit {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	} else {
		o.memoryNote = fmt.Sprintf("Memory: not confined (%v).", err)
	}
	o.scenarioSelected = map[string]bool{}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.scenarioSelected[s] = true
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	md, err := run(ctx, o)
	if md != "" {
		fmt.Print(md)
		if o.out != "" {
			if werr := os.WriteFile(o.out, []byte(md), 0o644); werr != nil {
				fmt.Fprintln(os.Stderr, "bench:", werr)
				os.Exit(1)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// commandLine is how this run was started, for the report.
func commandLine() string {
	args := []string{"go run ./bench"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + a + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

func (o options) selected(name string) bool {
	switch name {
	case "pull-trace":
		return o.trace || o.scenarioSelected[name]
	case "profile":
		return o.cpuprofile != "" && (len(o.scenarioSelected) == 0 || o.scenarioSelected[name])
	}
	return len(o.scenarioSelected) == 0 || o.scenarioSelected[name]
}

// target is something a client pulls from.
type target struct {
	label string
	host  string // host:port a client connects to
	p     *proc  // the registry process (the origin for the shaper)
	cache bool   // counts its upstream fetches
	base  bool   // the A/B base binary (-base-bin, -base-rev)
}

func (t target) url() string { return t.p.scheme + "://" + t.host }

// baseLabel is the label of the A/B base binary's content-cache.
const baseLabel = "content-cache (base)"

// baseOf returns the A/B base target of ts (the fourth), if there is one.
func baseOf(ts []target) (target, bool) {
	for _, t := range ts {
		if t.base {
			return t, true
		}
	}
	return target{}, false
}

type bench struct {
	o      options
	work   string
	hc     *http.Client
	tls    *tlsFiles // -tls
	seq    syncSeq   // numbers the log syncs
	base   string    // the A/B base binary, when there is one
	origin *proc
	procs  []*proc  // every process started, stopped at the end
	direct []target // origin, content-cache, distribution proxy (and the A/B base)
	wan    []target // the same across the shaper (-wan)
	shaper *Shaper
	store  *objectStore // -storage s3
	crane  *crane
	seed   uint64
	md     strings.Builder
	goals  []goal
	notes  []string
}

// goal is one line of the "where we stand" table.
type goal struct {
	what, measured, spread, want, met string
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(ctx context.Context, o options) (string, error) {
	if _, err := os.Stat(o.bin); err != nil {
		return "", fmt.Errorf("%s: %w (run `make build`)", o.bin, err)
	}
	work, err := os.MkdirTemp("", "content-cache-bench-")
	if err != nil {
		return "", err
	}
	if o.keep {
		logf("working directory %s (kept)", work)
	} else {
		defer os.RemoveAll(work)
	}
	b := &bench{o: o, work: work, hc: newHTTPClient(), seed: uint64(time.Now().UnixNano())}
	defer b.stopAll()
	if err := b.start(ctx); err != nil {
		return "", err
	}
	b.header()
	mem0 := readMemState()

	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"warm-load", b.warmLoadScenario},
		{"blob", b.blobScenario},
		{"ttfb", b.ttfbScenario},
		{"concurrent", b.concurrentScenario},
		{"manifest", b.manifestScenario},
		{"image", b.imageScenario},
		{"wan-pull", b.wanPullScenario},
		{"pull-trace", b.traceScenario},
		{"rss", b.rssScenario},
		{"profile", b.profileScenario},
		{"storage", b.storageScenario},
		{"floor", b.floorScenario},
		{"replicas", b.replicasScenario},
	}
	for _, s := range steps {
		if !o.selected(s.name) {
			continue
		}
		if err := s.run(ctx); err != nil {
			b.goalsTable()
			return b.md.String(), fmt.Errorf("scenario %s: %w", s.name, err)
		}
	}
	b.goalsTable()
	mem1 := readMemState()
	b.md.WriteString(memoryNote(mem0, mem1))
	return b.md.String(), nil
}

func (b *bench) startProc(ctx context.Context, name, kind, upstream string) (*proc, error) {
	return b.startProcBin(ctx, b.o.bin, name, kind, upstream)
}

func (b *bench) startProcBin(ctx context.Context, bin, name, kind, upstream string) (*proc, error) {
	p, err := startProc(ctx, b.hc, procSpec{bin: bin, dir: b.work, name: name, kind: kind, htpasswd: filepath.Join(b.work, "htpasswd"),
		upstream: upstream, storage: b.storageYAML, tls: b.tls})
	if err != nil {
		return nil, err
	}
	b.procs = append(b.procs, p)
	return p, nil
}

// stopAll stops every process this run started, and the shaper.
func (b *bench) stopAll() {
	for _, p := range b.procs {
		p.stop()
	}
	b.procs = nil
	if b.shaper != nil {
		_ = b.shaper.Close()
	}
	b.store.close()
}

func (b *bench) start(ctx context.Context) error {
	if err := writeHtpasswd(filepath.Join(b.work, "htpasswd"), b.o.bcryptCost); err != nil {
		return err
	}
	if b.o.tls {
		f, err := newTLSFiles(b.work)
		if err != nil {
			return err
		}
		b.tls = f
		f.useTLS(b.hc, !b.o.http1)
	}
	if err := b.baseBinary(ctx); err != nil {
		return err
	}
	switch b.o.storage {
	case "filesystem":
	case "s3":
		names := []string{"content-cache", "distribution-proxy", "content-cache-wan", "distribution-proxy-wan"}
		if b.base != "" {
			names = append(names, "content-cache-base", "content-cache-base-wan", "content-cache-base-rss")
		}
		s, err := startObjectStore(ctx, b.o.versitygw, b.work, names)
		if err != nil {
			return err
		}
		b.store = s
		logf("storage: versitygw at %s (the caches' buckets)", s.endpoint)
	default:
		return fmt.Errorf("-storage %q: expected filesystem or s3", b.o.storage)
	}
	logf("starting the origin, content-cache and distribution's proxy")
	origin, err := b.startProc(ctx, "origin", kindOrigin, "")
	if err != nil {
		return err
	}
	b.origin = origin
	cache, err := b.startProc(ctx, "content-cache", kindCache, origin.addr)
	if err != nil {
		return err
	}
	proxy, err := b.startProc(ctx, "distribution-proxy", kindProxy, origin.addr)
	if err != nil {
		return err
	}
	b.direct = []target{
		{label: "origin direct", host: origin.addr, p: origin},
		{label: "content-cache", host: cache.addr, p: cache, cache: true},
		{label: "distribution proxy", host: proxy.addr, p: proxy, cache: true},
	}
	hosts := []string{origin.addr, cache.addr, proxy.addr}
	if b.base != "" {
		base, err := b.startProcBin(ctx, b.base, "content-cache-base", kindCache, origin.addr)
		if err != nil {
			return err
		}
		b.direct = append(b.direct, target{label: baseLabel, host: base.addr, p: base, cache: true, base: true})
		hosts = append(hosts, base.addr)
	}
	if b.o.wan {
		s, err := NewShaper(origin.addr, b.o.wanDelay, b.o.wanMbit*1e6)
		if err != nil {
			return err
		}
		b.shaper = s
		logf("WAN: shaper %s -> origin, %v one way, %.0f Mbit/s per direction", s.Addr, b.o.wanDelay, b.o.wanMbit)
		cacheW, err := b.startProc(ctx, "content-cache-wan", kindCache, s.Addr)
		if err != nil {
			return err
		}
		proxyW, err := b.startProc(ctx, "distribution-proxy-wan", kindProxy, s.Addr)
		if err != nil {
			return err
		}
		b.wan = []target{
			{label: "origin direct, across the WAN", host: s.Addr, p: origin},
			{label: "content-cache, WAN to the origin", host: cacheW.addr, p: cacheW, cache: true},
			{label: "distribution proxy, WAN to the origin", host: proxyW.addr, p: proxyW, cache: true},
		}
		hosts = append(hosts, s.Addr, cacheW.addr, proxyW.addr)
		if b.base != "" {
			baseW, err := b.startProcBin(ctx, b.base, "content-cache-base-wan", kindCache, s.Addr)
			if err != nil {
				return err
			}
			b.wan = append(b.wan, target{label: baseLabel + ", WAN to the origin", host: baseW.addr, p: baseW, cache: true, base: true})
			hosts = append(hosts, baseW.addr)
		}
	}
	if b.o.selected("image") || b.o.selected("pull-trace") || b.o.selected("floor") {
		bin := b.o.crane
		if _, err := os.Stat(bin); err != nil {
			if bin, err = exec.LookPath("crane"); err != nil {
				return fmt.Errorf("crane not found at %s nor in PATH (make tools), needed for the image pulls; or leave them out with -only", b.o.crane)
			}
		}
		c, err := newCrane(bin, b.work, hosts, b.tls)
		if err != nil {
			return err
		}
		b.crane = c
	}
	// Open the keep-alive connections (and the caches' own upstream ones).
	for _, t := range append(slices.Clone(b.direct), b.wan...) {
		if _, err := get(ctx, b.hc, t.url()+"/v2/", nil, -1); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) nextSeed() uint64 {
	b.seed++
	return b.seed
}

// pushBlob pushes a fresh random blob to the origin (directly) and returns
// its path under /v2/.
func (b *bench) pushBlob(ctx context.Context, repo string, n int64) (string, error) {
	c := &regtest.Client{Base: b.origin.URL(), User: benchUser, Pass: benchPassword, HTTP: b.hc}
	dgst, got, err := c.PushBlobStream(ctx, repo, regtest.RandomStream(b.nextSeed(), n))
	if err != nil {
		return "", fmt.Errorf("pushing a blob to the origin: %w", err)
	}
	if got != n {
		return "", fmt.Errorf("pushed %d bytes, want %d", got, n)
	}
	return blobPath(repo, dgst), nil
}

// cpuOf is p's CPU time so far (0 if unreadable).
func cpuOf(p *proc) time.Duration {
	d, _ := cpuTime(p.pid())
	return d
}

func blobPath(repo string, d digest.Digest) string { return "/v2/" + repo + "/blobs/" + d.String() }

// rotate returns ts starting at index r: each repeat starts with another
// target, so that drift on a noisy machine spreads over all of them.
func rotate(ts []target, r int) []target {
	r %= len(ts)
	return append(slices.Clone(ts[r:]), ts[:r]...)
}

// settle waits until no content-cache has a fill in flight, then writes
// dirty pages back to disk (sync(2)), before a measurement. A fill commits
// after its client's last byte (an fsync, a rename, a link), and the
// kernel would flush the previous step's writes during the next
// measurement, taking CPU from one of the few cores. distribution's proxy
// commits before its request ends, which the log sync already waits for.
func (b *bench) settle(ctx context.Context) {
	for _, p := range b.procs {
		if p.kind == kindCache {
			if err := waitFillsDone(ctx, b.hc, p); err != nil {
				logf("settle: %s: %v", p.name, err)
			}
		}
	}
	syscall.Sync()
}

// waitFillsDone polls p's metrics until content_cache_fills_in_flight is
// 0, for at most a minute.
func waitFillsDone(ctx context.Context, hc *http.Client, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		busy, err := fillsInFlight(ctx, hc, p)
		if err != nil || !busy {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// fillsInFlight reads p's content_cache_fills_in_flight from its debug
// server's Prometheus page.
func fillsInFlight(ctx context.Context, hc *http.Client, p *proc) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.debug+"/metrics", nil)
	if err != nil {
		return false, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "content_cache_fills_in_flight "); ok {
			return strings.TrimSpace(v) != "0", nil
		}
	}
	return false, fmt.Errorf("no content_cache_fills_in_flight at %s", req.URL)
}

// measure runs fn, after settle, and returns what the origin served
// meanwhile.
func (b *bench) measure(ctx context.Context, fn func() error) (upstreamCount, error) {
	b.settle(ctx)
	mark := b.origin.log.mark()
	if err := fn(); err != nil {
		return upstreamCount{}, err
	}
	if err := b.origin.log.sync(ctx, b.hc, b.origin, &b.seq, false); err != nil {
		return upstreamCount{}, err
	}
	return b.origin.log.since(mark), nil
}

func (b *bench) header() {
	o := b.o
	fmt.Fprintf(&b.md, "## Benchmark run %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b.md, "- Machine: %s\n", machine())
	fmt.Fprintf(&b.md, "- Binary: %s\n", binaryVersion(o.bin))
	fmt.Fprintf(&b.md, "- Command: `%s`\n", o.commandLine)
	fmt.Fprintf(&b.md, "- Setup: three processes of the same binary on loopback, each with its own filesystem storage: "+
		"the origin (plain registry, htpasswd, bcrypt cost %d), content-cache (upstream: the origin) and distribution's "+
		"proxy (`proxy.remoteurl`: the origin, with the bench user's credentials). Clients send Basic credentials to all three. "+
		"Repeats: %d; values are medians over the repeats; ratios are medians of the per-repeat ratios, measured side by side "+
		"in the same repeat, the order of the targets rotating from repeat to repeat. Dirty pages are written back (sync) before each measurement. Upstream fetches are counted from the origin's log. "+
		"MB/s is 10^6 bytes per second, for the whole request.\n", o.bcryptCost, o.repeats)
	fmt.Fprintf(&b.md, "- %s\n", o.memoryNote)
	if b.store != nil {
		fmt.Fprintf(&b.md, "- Storage (-storage s3): the two caches keep their content in versitygw (posix back end, same disk), one bucket each, "+
			"through distribution's s3 driver, redirects off; the origin keeps the filesystem.\n")
	}
	if o.wan {
		fmt.Fprintf(&b.md, "- WAN: a shaping TCP proxy in front of the origin, %v one way (%v round trip), %.0f Mbit/s per direction "+
			"shared by all connections, one round trip per new connection; a second content-cache and distribution proxy use it as "+
			"their upstream, and the origin-direct WAN rows cross it. Repeats: %d.\n", o.wanDelay, 2*o.wanDelay, o.wanMbit, o.wanRepeats)
	}
	if b.tls != nil {
		proto := "HTTP/2"
		if o.http1 {
			proto = "HTTP/1.1 (-http1)"
		}
		fmt.Fprintf(&b.md, "- TLS (-tls): every registry serves HTTPS (TLS 1.3, ECDSA P-256 certificate for 127.0.0.1 from a CA the harness makes at start; "+
			"HTTP/2 when the client offers it, as crane does; the harness's own client: %s); the caches reach the origin over HTTPS, trusting that CA "+
			"(content-cache: `cas`; distribution's proxy: SSL_CERT_FILE).\n", proto)
	}
	if b.base != "" {
		fmt.Fprintf(&b.md, "- A/B: a fourth process, %q, runs the base binary %s as a second content-cache (upstream: the origin) in the same repeats, "+
			"the order rotating with the others; the A/B tables give new/base per repeat.\n", baseLabel, binaryVersion(b.base))
	}
	b.md.WriteString("\n")
}

// machine describes the host.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	kernel := "?"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d CPUs (%s), %s RAM, Linux %s, %s %s/%s", runtime.NumCPU(), model, mem, kernel, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func binaryVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return bin
	}
	return strings.TrimSpace(string(out))
}

func (b *bench) goalsTable() {
	if len(b.goals) == 0 {
		return
	}
	t := &table{head: []string{"target", "measured (median)", "per repeat: lowest … highest", "goal", "met"}, align: []string{"l", "r", "r", "l", "l"}}
	for _, g := range b.goals {
		t.row(g.what, g.measured, g.spread, g.want, g.met)
	}
	b.md.WriteString("### Targets\n\n" + t.String() + "\n")
	for _, n := range b.notes {
		b.md.WriteString(n + "\n")
	}
	if len(b.notes) > 0 {
		b.md.WriteString("\n")
	}
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func (b *bench) addGoal(what, measured, spread, want string, met bool, valid bool) {
	m := yesNo(met)
	if !valid {
		m = "–"
	}
	b.goals = append(b.goals, goal{what, measured, spread, want, m})
}

// spread shows the lowest and highest of the per-repeat values.
func spread(xs []float64, format func(float64) string) string {
	if len(xs) == 0 {
		return "–"
	}
	lo, hi := slices.Min(xs), slices.Max(xs)
	if lo == hi {
		return format(lo)
	}
	return format(lo) + " … " + format(hi)
}

// ---- scenarios ----

// blobScenario: one fresh blob per repeat, pulled cold from each target
// (time to first byte, throughput), then warm three times each.
func (b *bench) blobScenario(ctx context.Context) error {
	s, err := b.blobRun(ctx, b.direct, int64(b.o.blobSize), b.o.repeats, true)
	if err != nil {
		return err
	}
	b.blobTable(fmt.Sprintf("Blob of %s, cold then warm, on loopback", fmtBytes(float64(b.o.blobSize))), s, b.direct, true)

	cacheCold, proxyRatio := s.med("ratio cold cache/origin"), s.med("ratio cold cache/proxy")
	warm := s.med("ratio warm cache/origin")
	ttfb := s.med("ttfb delta cache-origin")
	// Issue #16: warm ≥ 1.5× the plain registry over plain HTTP, ≥ 1.0×
	// with the same TLS on both.
	warmGoal := 1.5
	if b.o.tls {
		warmGoal = 1.0
	}
	b.addGoal("warm blob: content-cache vs the plain registry (origin) serving it", fmtRatio(warm), spread(s["ratio warm cache/origin"], fmtRatio), fmt.Sprintf("≥ %.1f×", warmGoal), warm >= warmGoal, !math.IsNaN(warm))
	b.addGoal("cold fill: content-cache vs origin direct", fmtRatio(cacheCold), spread(s["ratio cold cache/origin"], fmtRatio), "≥ 0.8×", cacheCold >= 0.8, !math.IsNaN(cacheCold))
	b.addGoal("cold fill: content-cache vs distribution's proxy", fmtRatio(proxyRatio), spread(s["ratio cold cache/proxy"], fmtRatio), "≥ 2×", proxyRatio >= 2, !math.IsNaN(proxyRatio))
	b.addGoal("cold time to first byte: content-cache minus origin direct", fmtDeltaMS(ttfb), spread(s["ttfb delta cache-origin"], fmtDeltaMS), "≤ +2 ms", ttfb <= 2, !math.IsNaN(ttfb))
	cpu := s.med("ratio cpu cache/proxy")
	b.addGoal("cold CPU per byte: content-cache vs distribution's proxy", fmtRatio(cpu), spread(s["ratio cpu cache/proxy"], fmtRatio), "≤ 0.8×", cpu <= 0.8, !math.IsNaN(cpu))

	if b.o.wan {
		w, err := b.blobRun(ctx, b.wan, int64(b.o.wanBlobSize), b.o.wanRepeats, false)
		if err != nil {
			return err
		}
		b.blobTable(fmt.Sprintf("Blob of %s, cold, across the emulated WAN (%v round trip, %.0f Mbit/s)", fmtBytes(float64(b.o.wanBlobSize)), 2*b.o.wanDelay, b.o.wanMbit), w, b.wan, false)
		c, p, d := w.med("ratio cold cache/origin"), w.med("ratio cold cache/proxy"), w.med("ttfb delta cache-origin")
		b.addGoal("cold fill across the emulated WAN: content-cache vs origin direct across it", fmtRatio(c), spread(w["ratio cold cache/origin"], fmtRatio), "≥ 0.8×", c >= 0.8, !math.IsNaN(c))
		b.addGoal("cold fill across the emulated WAN: content-cache vs distribution's proxy", fmtRatio(p), spread(w["ratio cold cache/proxy"], fmtRatio), "≥ 2×", p >= 2, !math.IsNaN(p))
		b.addGoal("cold time to first byte across the emulated WAN: content-cache minus origin direct", fmtDeltaMS(d), spread(w["ttfb delta cache-origin"], fmtDeltaMS), "≤ +5 ms", d <= 5, !math.IsNaN(d))
	}
	return nil
}

// warmGets is how many warm GETs of each target a repeat takes the median of.
const warmGets = 5

func (b *bench) blobRun(ctx context.Context, ts []target, n int64, repeats int, warm bool) (series, error) {
	s := series{}
	for r := range repeats {
		path, err := b.pushBlob(ctx, "bench/blob", n)
		if err != nil {
			return nil, err
		}
		logf("blob %s, repeat %d/%d: cold", fmtBytes(float64(n)), r+1, repeats)
		cold := map[string]timing{}
		for _, t := range rotate(ts, r) {
			var tm timing
			var cpu, originCPU time.Duration
			up, err := b.measure(ctx, func() (err error) {
				c0, o0 := cpuOf(t.p), cpuOf(b.origin)
				tm, err = get(ctx, b.hc, t.url()+path, nil, n)
				cpu, originCPU = b.cpuAfterWork(ctx, t.p)-c0, cpuOf(b.origin)-o0
				return err
			})
			if err != nil {
				return nil, err
			}
			cold[t.label] = tm
			mib := float64(n) / (1 << 20)
			if t.p != b.origin {
				s.add(t.label+" cold cpu", cpu.Seconds()*1e3)
				s.add(t.label+" cold cpu per MiB", cpu.Seconds()*1e3/mib)
			}
			s.add(t.label+" cold origin cpu", originCPU.Seconds()*1e3)
			s.add(t.label+" cold origin cpu per MiB", originCPU.Seconds()*1e3/mib)
			s.add(t.label+" cold ttfb", tm.ttfb.Seconds()*1e3)
			s.add(t.label+" cold MB/s", tm.mbps())
			if t.cache {
				s.add(t.label+" upstream GETs", float64(up.blobGets))
				s.add(t.label+" upstream HEADs", float64(up.blobHeads))
				s.add(t.label+" upstream bytes", float64(up.blobBytes))
			}
		}
		o, c, p := cold[ts[0].label], cold[ts[1].label], cold[ts[2].label]
		s.add("ratio cold cache/origin", c.mbps()/o.mbps())
		s.add("ratio cold proxy/origin", p.mbps()/o.mbps())
		s.add("ratio cold cache/proxy", c.mbps()/p.mbps())
		s.add("ttfb delta cache-origin", (c.ttfb-o.ttfb).Seconds()*1e3)
		s.add("ttfb delta proxy-origin", (p.ttfb-o.ttfb).Seconds()*1e3)
		if cp := s[ts[2].label+" cold cpu"]; len(cp) > 0 && cp[len(cp)-1] > 0 {
			cc := s[ts[1].label+" cold cpu"]
			s.add("ratio cpu cache/proxy", cc[len(cc)-1]/cp[len(cp)-1])
		}
		bt, hasBase := baseOf(ts)
		if hasBase {
			bc := cold[bt.label]
			s.add("ratio cold base/origin", bc.mbps()/o.mbps())
			s.add("ttfb delta base-origin", (bc.ttfb-o.ttfb).Seconds()*1e3)
		}
		if !warm {
			continue
		}
		logf("blob %s, repeat %d/%d: warm", fmtBytes(float64(n)), r+1, repeats)
		w, wt := map[string][]float64{}, map[string][]float64{}
		b.settle(ctx)
		for range warmGets {
			for _, t := range rotate(ts, r) {
				tm, err := get(ctx, b.hc, t.url()+path, nil, n)
				if err != nil {
					return nil, err
				}
				w[t.label] = append(w[t.label], tm.mbps())
				wt[t.label] = append(wt[t.label], tm.ttfb.Seconds()*1e3)
			}
		}
		for _, t := range ts {
			s.add(t.label+" warm MB/s", median(w[t.label]))
			s.add(t.label+" warm ttfb", median(wt[t.label]))
		}
		wo, wc, wp := median(w[ts[0].label]), median(w[ts[1].label]), median(w[ts[2].label])
		s.add("ratio warm cache/origin", wc/wo)
		s.add("ratio warm proxy/origin", wp/wo)
		if hasBase {
			s.add("ratio warm base/origin", median(w[bt.label])/wo)
		}
	}
	return s, nil
}

func (b *bench) blobTable(title string, s series, ts []target, warm bool) {
	head := []string{"", "cold: time to first byte", "cold: throughput", "cold: vs origin direct", "cold: upstream GET / HEAD / bytes", "cold: CPU of the process / of the origin"}
	if warm {
		head = append(head, "warm: time to first byte", "warm: throughput", "warm: vs origin direct")
	}
	t := &table{head: head, align: []string{"l", "r", "r", "r", "r", "r", "r", "r", "r"}}
	for i, tg := range ts {
		ratio, wratio, up := "1 (itself)", "1 (itself)", "–"
		switch {
		case tg.base:
			ratio, wratio = fmtRatio(s.med("ratio cold base/origin")), fmtRatio(s.med("ratio warm base/origin"))
		case i == 1:
			ratio, wratio = fmtRatio(s.med("ratio cold cache/origin")), fmtRatio(s.med("ratio warm cache/origin"))
		case i == 2:
			ratio, wratio = fmtRatio(s.med("ratio cold proxy/origin")), fmtRatio(s.med("ratio warm proxy/origin"))
		}
		if tg.cache {
			up = fmt.Sprintf("%s / %s / %s", fmtCount(s.med(tg.label+" upstream GETs")), fmtCount(s.med(tg.label+" upstream HEADs")), fmtBytes(s.med(tg.label+" upstream bytes")))
		}
		cpu := "– / " + fmtMS(s.med(tg.label+" cold origin cpu"))
		if tg.p != b.origin {
			cpu = fmtMS(s.med(tg.label+" cold cpu")) + " / " + fmtMS(s.med(tg.label+" cold origin cpu"))
		}
		row := []string{tg.label, fmtMS(s.med(tg.label + " cold ttfb")), fmtMBps(s.med(tg.label + " cold MB/s")), ratio, up, cpu}
		if warm {
			row = append(row, fmtMS(s.med(tg.label+" warm ttfb")), fmtMBps(s.med(tg.label+" warm MB/s")), wratio)
		}
		t.row(row...)
	}
	fmt.Fprintf(&b.md, "### %s\n\n%s\n", title, t)
	b.md.WriteString("Cold: the first GET of a blob pushed to the origin just before (for origin direct, its first GET of it); a fresh blob each repeat. " +
		"Warm: the median of five more GETs of it per repeat. " +
		"CPU: user and system time of the process serving the pull, and of the origin, during the cold pull (/proc/PID/stat, 10 ms ticks).\n")
	fmt.Fprintf(&b.md, "content-cache vs distribution's proxy, cold: %s the throughput; time to first byte minus origin direct's: content-cache %s, distribution's proxy %s.\n",
		fmtRatio(s.med("ratio cold cache/proxy")), fmtDeltaMS(s.med("ttfb delta cache-origin")), fmtDeltaMS(s.med("ttfb delta proxy-origin")))
	fmt.Fprintf(&b.md, "Cold CPU per MiB pulled (the serving process): content-cache %s, distribution's proxy %s, content-cache / proxy %s (per repeat %s); the origin's: %s.\n\n",
		fmtMS(s.med(ts[1].label+" cold cpu per MiB")), fmtMS(s.med(ts[2].label+" cold cpu per MiB")), fmtRatio(s.med("ratio cpu cache/proxy")),
		spread(s["ratio cpu cache/proxy"], fmtRatio), fmtMS(s.med(ts[1].label+" cold origin cpu per MiB")))
	if bt, ok := baseOf(ts); ok {
		ms := []abMetric{
			{"cold: time to first byte", ts[1].label + " cold ttfb", bt.label + " cold ttfb", fmtMS, false},
			{"cold: throughput", ts[1].label + " cold MB/s", bt.label + " cold MB/s", fmtMBps, true},
			{"cold: CPU per MiB of the process", ts[1].label + " cold cpu per MiB", bt.label + " cold cpu per MiB", fmtMS, false},
			{"cold: CPU per MiB of the origin", ts[1].label + " cold origin cpu per MiB", bt.label + " cold origin cpu per MiB", fmtMS, false},
		}
		if warm {
			ms = append(ms, abMetric{"warm: time to first byte", ts[1].label + " warm ttfb", bt.label + " warm ttfb", fmtMS, false},
				abMetric{"warm: throughput", ts[1].label + " warm MB/s", bt.label + " warm MB/s", fmtMBps, true})
		}
		b.abTable(title, s, ms)
	}
}

// concurrentScenario: n clients GET the same fresh blob at the same moment.
func (b *bench) concurrentScenario(ctx context.Context) error {
	n, sz := b.o.concurrency, int64(b.o.concSize)
	s := series{}
	ts := b.direct
	for r := range b.o.repeats {
		path, err := b.pushBlob(ctx, "bench/concurrent", sz)
		if err != nil {
			return err
		}
		logf("%d concurrent misses of %s, repeat %d/%d", n, fmtBytes(float64(sz)), r+1, b.o.repeats)
		for _, t := range rotate(ts, r) {
			var tms []timing
			b.settle(ctx)
			c0, _ := cpuTime(t.p.pid())
			up, err := b.measure(ctx, func() (err error) {
				tms, err = getConcurrent(ctx, b.hc, t.url()+path, n, sz)
				return err
			})
			if err != nil {
				return err
			}
			// The server's CPU until its fill is committed, per MiB it
			// sent to the clients.
			b.quiesce(ctx, t.p, b.uploadsGlob(t.p))
			c1, _ := cpuTime(t.p.pid())
			s.add(t.label+" cpu", (c1-c0).Seconds()*1e3/(float64(int64(n)*sz)/(1<<20)))
			var lat, ttfb []float64
			for _, tm := range tms {
				lat = append(lat, tm.total.Seconds()*1e3)
				ttfb = append(ttfb, tm.ttfb.Seconds()*1e3)
			}
			s.add(t.label+" p50", percentile(lat, 50))
			s.add(t.label+" p99", percentile(lat, 99))
			s.add(t.label+" ttfb p50", percentile(ttfb, 50))
			s.add(t.label+" upstream GETs", float64(up.blobGets))
			s.add(t.label+" upstream HEADs", float64(up.blobHeads))
			s.add(t.label+" upstream bytes", float64(up.blobBytes))
		}
	}
	t := &table{head: []string{"", "upstream GETs", "upstream HEADs", "upstream bytes", "time to first byte p50", "latency p50", "latency p99", "server CPU per MiB sent"}, align: []string{"l", "r", "r", "r", "r", "r", "r", "r"}}
	for _, tg := range ts {
		g, h, by := fmtCount(s.med(tg.label+" upstream GETs")), fmtCount(s.med(tg.label+" upstream HEADs")), fmtBytes(s.med(tg.label+" upstream bytes"))
		if !tg.cache {
			g, h, by = "(itself: "+g+")", "–", "–"
		}
		t.row(tg.label, g, h, by, fmtMS(s.med(tg.label+" ttfb p50")), fmtMS(s.med(tg.label+" p50")), fmtMS(s.med(tg.label+" p99")), fmtMS(s.med(tg.label+" cpu")))
	}
	fmt.Fprintf(&b.md, "### %d concurrent misses of one %s blob\n\n%s\n", n, fmtBytes(float64(sz)), t)
	fmt.Fprintf(&b.md, "Latency: from sending the GET to its last byte, per client; p50 and p99 over the %d clients of a repeat, then the median over the repeats. Upstream GETs: the most of any repeat for content-cache is %s.\n\n",
		n, fmtCount(s.max(ts[1].label+" upstream GETs")))
	if bt, ok := baseOf(ts); ok {
		b.abTable(fmt.Sprintf("%d concurrent misses", n), s, []abMetric{
			{"upstream GETs", ts[1].label + " upstream GETs", bt.label + " upstream GETs", fmtCount, false},
			{"time to first byte p50", ts[1].label + " ttfb p50", bt.label + " ttfb p50", fmtMS, false},
			{"latency p50", ts[1].label + " p50", bt.label + " p50", fmtMS, false},
			{"latency p99", ts[1].label + " p99", bt.label + " p99", fmtMS, false},
			{"server CPU per MiB sent", ts[1].label + " cpu", bt.label + " cpu", fmtMS, false},
		})
	}
	worst := s.max(ts[1].label + " upstream GETs")
	b.addGoal(fmt.Sprintf("%d concurrent misses: upstream fetches (distribution's proxy: %s)", n, fmtCount(s.med(ts[2].label+" upstream GETs"))),
		fmtCount(worst)+" (the most of any repeat)", spread(s[ts[1].label+" upstream GETs"], fmtCount), "= 1", worst == 1, !math.IsNaN(worst))
	return nil
}

// manifestScenario: GET of a manifest by tag, as many as workers manage.
func (b *bench) manifestScenario(ctx context.Context) error {
	img := regtest.RandomImage(int64(b.nextSeed()), 1, 4096)
	img.Repo, img.Tag = "bench/manifest", "latest"
	if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img); err != nil {
		return err
	}
	path := "/v2/" + img.Repo + "/manifests/" + img.Tag
	s := series{}
	ts := b.direct
	for r := range b.o.repeats {
		logf("manifest by tag, repeat %d/%d", r+1, b.o.repeats)
		rates := map[string]float64{}
		for _, t := range rotate(ts, r) {
			var rate float64
			var count int64
			up, err := b.measure(ctx, func() (err error) {
				rate, count, err = requestRate(ctx, b.hc, t.url()+path, b.o.rpsWorkers, b.o.rpsDuration)
				return err
			})
			if err != nil {
				return err
			}
			rates[t.label] = rate
			s.add(t.label+" rate", rate)
			if t.cache {
				// +1: the first, uncounted request
				s.add(t.label+" upstream per request", float64(up.manifestReqs)/float64(count+1))
			}
		}
		s.add("ratio cache/origin", rates[ts[1].label]/rates[ts[0].label])
		s.add("ratio proxy/origin", rates[ts[2].label]/rates[ts[0].label])
		s.add("ratio cache/proxy", rates[ts[1].label]/rates[ts[2].label])
		if bt, ok := baseOf(ts); ok {
			s.add("ratio base/origin", rates[bt.label]/rates[ts[0].label])
		}
	}
	t := &table{head: []string{"", "requests per second", "vs origin direct", "upstream manifest requests per request"}, align: []string{"l", "r", "r", "r"}}
	t.row(ts[0].label, fmtRate(s.med(ts[0].label+" rate")), "1 (itself)", "–")
	t.row(ts[1].label, fmtRate(s.med(ts[1].label+" rate")), fmtRatio(s.med("ratio cache/origin")), fmt.Sprintf("%.2f", s.med(ts[1].label+" upstream per request")))
	t.row(ts[2].label, fmtRate(s.med(ts[2].label+" rate")), fmtRatio(s.med("ratio proxy/origin")), fmt.Sprintf("%.2f", s.med(ts[2].label+" upstream per request")))
	bt, hasBase := baseOf(ts)
	if hasBase {
		t.row(bt.label, fmtRate(s.med(bt.label+" rate")), fmtRatio(s.med("ratio base/origin")), fmt.Sprintf("%.2f", s.med(bt.label+" upstream per request")))
	}
	fmt.Fprintf(&b.md, "### Manifest by tag, %d concurrent clients for %v\n\n%s\n", b.o.rpsWorkers, b.o.rpsDuration, t)
	fmt.Fprintf(&b.md, "content-cache vs distribution's proxy: %s. content-cache resolves every tag at the origin (a HEAD), by design.\n\n", fmtRatio(s.med("ratio cache/proxy")))
	byTag := s.med("ratio cache/origin")
	b.addGoal("manifest by tag: content-cache's requests per second / origin direct's", fmtRatio(byTag), spread(s["ratio cache/origin"], fmtRatio), "≥ 0.9×", byTag >= 0.9, !math.IsNaN(byTag))
	if hasBase {
		b.abTable("manifest by tag", s, []abMetric{{"requests per second", ts[1].label + " rate", bt.label + " rate", fmtRate, true}})
	}
	return nil
}

// imageScenario: an image of several layers pulled with crane, cold and
// warm, directly and (with -wan) across the emulated WAN.
func (b *bench) imageScenario(ctx context.Context) error {
	s, err := b.imageRun(ctx, b.direct, b.o.repeats)
	if err != nil {
		return err
	}
	b.imageTable(fmt.Sprintf("Image of %d layers (%s) pulled with crane, on loopback", b.o.imageLayers, fmtBytes(float64(b.o.imageSize))), s, b.direct)
	b.cpuBudgetTable(s, b.direct)
	cold := s.med("ratio cold cache/proxy")
	b.addGoal("cold image pull (crane): content-cache's time / distribution's proxy's", fmtRatio(cold), spread(s["ratio cold cache/proxy"], fmtRatio), "≤ 0.8×", cold <= 0.8, !math.IsNaN(cold))
	if !b.o.wan {
		b.addGoal("warm pull across the emulated WAN vs origin direct across it", "not run", "–", "≥ 10× faster", false, false)
		b.notes = append(b.notes, "The WAN target needs `-wan`.")
		return nil
	}
	w, err := b.imageRun(ctx, b.wan, b.o.wanRepeats)
	if err != nil {
		return err
	}
	b.imageTable(fmt.Sprintf("Image of %d layers (%s) pulled with crane, across the emulated WAN (%v round trip, %.0f Mbit/s)", b.o.imageLayers, fmtBytes(float64(b.o.imageSize)), 2*b.o.wanDelay, b.o.wanMbit), w, b.wan)
	speedup := w.med("speedup cache warm")
	b.addGoal("warm pull across the emulated WAN: origin direct's time / content-cache's", fmtRatio(speedup), spread(w["speedup cache warm"], fmtRatio), "≥ 10×", speedup >= 10, !math.IsNaN(speedup))
	return nil
}

func (b *bench) imageRun(ctx context.Context, ts []target, repeats int) (series, error) {
	s := series{}
	layer := int(b.o.imageSize) / b.o.imageLayers
	for r := range repeats {
		seed := b.nextSeed()
		img := regtest.RandomImage(int64(seed), b.o.imageLayers, layer)
		img.Repo, img.Tag = "bench/image", fmt.Sprintf("s%d", seed)
		if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img); err != nil {
			return nil, fmt.Errorf("pushing the image: %w", err)
		}
		ref := func(t target) string { return t.host + "/" + img.Repo + ":" + img.Tag }
		logf("image pull (%s), repeat %d/%d", ts[0].label, r+1, repeats)
		mib := float64(layer*b.o.imageLayers) / (1 << 20)
		pull := func(t target, name string) error {
			var d, cpu, ocpu time.Duration
			var host hostCPU
			up, err := b.measure(ctx, func() (err error) {
				c0, o0 := cpuOf(t.p), cpuOf(b.origin)
				h0, herr := readHostCPU()
				d, err = b.crane.pull(ctx, ref(t))
				cpu = b.cpuAfterWork(ctx, t.p) - c0
				h1, herr1 := readHostCPU()
				ocpu = cpuOf(b.origin) - o0
				if herr == nil && herr1 == nil {
					host = h1.sub(h0)
				}
				return err
			})
			if err != nil {
				return err
			}
			s.add(name, d.Seconds())
			if t.p != b.origin {
				s.add(name+" cpu", cpu.Seconds()*1e3/mib)
			}
			s.add(name+" origin cpu", ocpu.Seconds()*1e3/mib)
			s.add(name+" crane cpu", b.crane.lastCPU.Seconds()*1e3/mib)
			s.add(name+" host busy", host.share())
			s.add(name+" host cpu", host.busy.Seconds()*1e3/mib)
			s.add(name+" upstream GETs", float64(up.blobGets))
			s.add(name+" upstream bytes", float64(up.blobBytes))
			return nil
		}
		if err := pull(ts[0], "direct"); err != nil {
			return nil, err
		}
		// Each repeat starts with another cache (with two: every other).
		for _, c := range rotateNamed(imageCaches(ts), r) {
			if err := pull(c.t, c.name+" cold"); err != nil {
				return nil, err
			}
			if err := pull(c.t, c.name+" warm"); err != nil {
				return nil, err
			}
		}
		d := s["direct"][r]
		for _, c := range imageCaches(ts) {
			for _, phase := range []string{" cold", " warm"} {
				s.add("speedup "+c.name+phase, d/s[c.name+phase][r])
			}
		}
		s.add("ratio cold cache/proxy", s["cache cold"][r]/s["proxy cold"][r])
		if c, p := s["cache cold cpu"][r], s["proxy cold cpu"][r]; p > 0 {
			s.add("ratio cpu cache/proxy", c/p)
		}
	}
	return s, nil
}

func (b *bench) imageTable(title string, s series, ts []target) {
	t := &table{head: []string{"", "pull", "time", "speed-up vs origin direct", "blob GETs at the origin", "bytes from the origin", "CPU per MiB: process / origin"}, align: []string{"l", "l", "r", "r", "r", "r", "r"}}
	t.row(ts[0].label, "–", fmtSec(s.med("direct")), "1 (itself)", fmtCount(s.med("direct upstream GETs")), fmtBytes(s.med("direct upstream bytes")), "– / "+fmtMS(s.med("direct origin cpu")))
	for _, c := range imageCaches(ts) {
		for _, phase := range []string{"cold", "warm"} {
			n := c.name + " " + phase
			t.row(c.t.label, phase, fmtSec(s.med(n)), fmtRatio(s.med("speedup "+n)), fmtCount(s.med(n+" upstream GETs")), fmtBytes(s.med(n+" upstream bytes")),
				fmtMS(s.med(n+" cpu"))+" / "+fmtMS(s.med(n+" origin cpu")))
		}
	}
	fmt.Fprintf(&b.md, "### %s\n\n%s\n", title, t)
	b.md.WriteString("Time: wall time of `crane pull --format oci` into an empty directory (process start included); a fresh image each repeat. " +
		"Origin direct's blob GETs are the pull itself. CPU: user and system time of the process serving the pull and of the origin, per MiB of the image (10 ms ticks).\n")
	fmt.Fprintf(&b.md, "Cold pull, content-cache / distribution's proxy: time %s (per repeat %s), CPU %s (per repeat %s).\n\n",
		fmtRatio(s.med("ratio cold cache/proxy")), spread(s["ratio cold cache/proxy"], fmtRatio), fmtRatio(s.med("ratio cpu cache/proxy")), spread(s["ratio cpu cache/proxy"], fmtRatio))
	if _, ok := baseOf(ts); ok {
		ms := []abMetric{}
		for _, phase := range []string{"cold", "warm"} {
			ms = append(ms, abMetric{phase + ": time", "cache " + phase, "base " + phase, fmtSec, false},
				abMetric{phase + ": CPU per MiB of the process", "cache " + phase + " cpu", "base " + phase + " cpu", fmtMS, false})
		}
		ms = append(ms, abMetric{"cold: CPU per MiB of the origin", "cache cold origin cpu", "base cold origin cpu", fmtMS, false})
		b.abTable(title, s, ms)
	}
}

// namedTarget is a cache of the image scenario and the name of its series.
type namedTarget struct {
	t    target
	name string
}

// imageCaches are the caches of ts (all but the origin): "cache", "proxy"
// and, in A/B runs, "base".
func imageCaches(ts []target) []namedTarget {
	out := []namedTarget{{ts[1], "cache"}, {ts[2], "proxy"}}
	if bt, ok := baseOf(ts); ok {
		out = append(out, namedTarget{bt, "base"})
	}
	return out
}

func rotateNamed(ts []namedTarget, r int) []namedTarget {
	r %= len(ts)
	return append(slices.Clone(ts[r:]), ts[:r]...)
}

// rssScenario: the peak RSS of a content-cache and a distribution proxy,
// both started afresh for it, while each streams one big blob cold (a fill)
// and then warm (a hit). The peak is VmHWM of /proc/PID/status: since
// start for the cold pull, and reset (/proc/PID/clear_refs) before the
// warm one. The origin serving the blob is shown for comparison.
func (b *bench) rssScenario(ctx context.Context) error {
	n := int64(b.o.rssSize)
	logf("peak RSS: pushing a %s blob to the origin", fmtBytes(float64(n)))
	path, err := b.pushBlob(ctx, "bench/rss", n)
	if err != nil {
		return err
	}
	cache, err := b.startProc(ctx, "content-cache-rss", kindCache, b.origin.addr)
	if err != nil {
		return err
	}
	proxy, err := b.startProc(ctx, "distribution-proxy-rss", kindProxy, b.origin.addr)
	if err != nil {
		return err
	}
	ts := []target{
		{label: "content-cache", host: cache.addr, p: cache, cache: true},
		{label: "distribution proxy", host: proxy.addr, p: proxy, cache: true},
	}
	if b.base != "" {
		base, err := b.startProcBin(ctx, b.base, "content-cache-base-rss", kindCache, b.origin.addr)
		if err != nil {
			return err
		}
		ts = append(ts, target{label: baseLabel, host: base.addr, p: base, cache: true, base: true})
	}
	ts = append(ts, b.direct[0])
	t := &table{head: []string{"", "pull", "RSS before", "peak RSS (VmHWM)", "peak anonymous RSS (sampled)", "throughput"}, align: []string{"l", "l", "r", "r", "r", "r"}}
	peaks := map[string]float64{}
	resetFailed := false
	for _, tg := range ts {
		// The process's own first request: connections, the /v2/ ping.
		if _, err := get(ctx, b.hc, tg.url()+"/v2/", nil, -1); err != nil {
			return err
		}
		phases := []string{"cold (fill)", "warm (hit)"}
		if !tg.cache {
			phases = []string{"served from storage"}
		}
		for i, phase := range phases {
			logf("peak RSS: %s, %s", tg.label, phase)
			pid := tg.p.pid()
			before, err := procStatus(pid, "VmRSS")
			if err != nil {
				return err
			}
			// A fresh cache's cold pull counts from its start.
			if !tg.cache || i > 0 {
				if err := resetPeakRSS(pid); err != nil {
					resetFailed = true
				}
			}
			b.settle(ctx)
			anon := sampleMax(pid, "RssAnon")
			tm, err := get(ctx, b.hc, tg.url()+path, nil, n)
			maxAnon := anon()
			if err != nil {
				return err
			}
			peak, err := procStatus(pid, "VmHWM")
			if err != nil {
				return err
			}
			peaks[tg.label+" "+phase] = float64(peak)
			t.row(tg.label, phase, fmtBytes(float64(before)), fmtBytes(float64(peak)), fmtBytes(float64(maxAnon)), fmtMBps(tm.mbps()))
		}
	}
	fmt.Fprintf(&b.md, "### Peak RSS while streaming a %s blob\n\n%s\n", fmtBytes(float64(n)), t)
	b.md.WriteString("content-cache and distribution's proxy are fresh processes for this scenario: their cold peak counts from their start. " +
		"Of an idle process's RSS, about 40 MiB are the binary's own pages (RssFile). Anonymous RSS is sampled every 10 ms.\n\n")
	if resetFailed {
		b.md.WriteString("The kernel refused to reset VmHWM (/proc/PID/clear_refs): the warm peaks are since each process started.\n\n")
	}
	cold, warm := peaks[ts[0].label+" cold (fill)"], peaks[ts[0].label+" warm (hit)"]
	peak := max(cold, warm)
	b.addGoal(fmt.Sprintf("peak RSS of content-cache streaming %s (cold and warm; distribution's proxy: %s)", fmtBytes(float64(n)), fmtBytes(max(peaks[ts[1].label+" cold (fill)"], peaks[ts[1].label+" warm (hit)"]))),
		fmtBytes(peak), "one run", "< 150 MiB (at 4 GiB)", peak < 150<<20, true)
	if b.base != "" {
		bpeak := max(peaks[baseLabel+" cold (fill)"], peaks[baseLabel+" warm (hit)"])
		fmt.Fprintf(&b.md, "A/B: peak RSS, new / base: %s (%s / %s; one run).\n\n", fmtRatio(peak/bpeak), fmtBytes(peak), fmtBytes(bpeak))
	}
	if n < 4<<30 {
		b.notes = append(b.notes, fmt.Sprintf("The RSS target is for 4 GiB; this run streamed %s (`-rss-size 4GiB` for the full size).", fmtBytes(float64(n))))
	}
	return nil
}

// sampleMax reads a /proc/PID/status field every 10 ms until the returned
// function is called, which returns the largest value seen.
func sampleMax(pid int, field string) func() int64 {
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		var peak int64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if v, err := procStatus(pid, field); err == nil {
				peak = max(peak, v)
			}
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		return <-done
	}
}

// profileScenario takes CPU profiles (pprof, from the debug server of a
// binary built from ./bench/pprofbin) of each cache and of the origin while
// the cache fills one fresh blob after another, and reports the throughput
// and CPU time meanwhile.
func (b *bench) profileScenario(ctx context.Context) error {
	if err := os.MkdirAll(b.o.cpuprofile, 0o755); err != nil {
		return err
	}
	n := int64(b.o.blobSize)
	secs := b.o.profileSeconds
	// Enough blobs for the profile at 1 GB/s, pushed before profiling,
	// and at most 2 GiB or 1,000 of them (small blobs, to profile the
	// cost per request, are pulled more slowly than that).
	count := max(4, min(int(int64(secs)*1e9/n)+1, int(2<<30/n), 1000))
	logf("profile: pushing %d blobs of %s", count, fmtBytes(float64(n)))
	var paths []string
	for range count {
		p, err := b.pushBlob(ctx, "bench/profile", n)
		if err != nil {
			return err
		}
		paths = append(paths, p)
	}
	// The relay of the floor scenario too: where it spends its CPU is
	// what the caches' profiles are compared with.
	relay, err := b.startRelay(ctx)
	if err != nil {
		return err
	}
	defer relay.stop()
	targets := append(slices.Clone(b.direct[1:]), target{label: "relay (the floor)", host: relay.addr, p: relay.asProc()})
	t := &table{head: []string{"", "cold pulls", "throughput", "CPU per pull: process", "CPU per pull: origin", "profiles"}, align: []string{"l", "r", "r", "r", "r", "l"}}
	for _, tg := range targets {
		logf("profile: %s, %d s of cold pulls", tg.label, secs)
		name := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(tg.label)
		files := []string{filepath.Join(b.o.cpuprofile, name+".cold.pprof"), filepath.Join(b.o.cpuprofile, "origin-during-"+name+".cold.pprof")}
		profErr := make(chan error, 2)
		var wg sync.WaitGroup
		for i, p := range []*proc{tg.p, b.origin} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				profErr <- fetchProfile(ctx, p, secs, files[i])
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		c0, o0 := cpuOf(tg.p), cpuOf(b.origin)
		start := time.Now()
		pulls := 0
		var bytes int64
	loop:
		for _, p := range paths {
			select {
			case <-done:
				break loop
			default:
			}
			tm, err := get(ctx, b.hc, tg.url()+p, nil, n)
			if err != nil {
				return err
			}
			pulls++
			bytes += tm.bytes
		}
		elapsed := time.Since(start)
		cpu, ocpu := cpuOf(tg.p)-c0, cpuOf(b.origin)-o0
		<-done
		close(profErr)
		for err := range profErr {
			if err != nil {
				return fmt.Errorf("%w (build the binary from ./bench/pprofbin)", err)
			}
		}
		t.row(tg.label, fmtCount(float64(pulls)), fmtMBps(float64(bytes)/elapsed.Seconds()/1e6),
			fmtMS(cpu.Seconds()*1e3/float64(pulls)), fmtMS(ocpu.Seconds()*1e3/float64(pulls)),
			"`"+filepath.Base(files[0])+"`, `"+filepath.Base(files[1])+"`")
	}
	fmt.Fprintf(&b.md, "### Profile: back-to-back cold pulls of %s blobs\n\n%s\n", fmtBytes(float64(n)), t)
	fmt.Fprintf(&b.md, "Profiles in `%s`: `go tool pprof -top BINARY FILE`.\n\n", b.o.cpuprofile)
	return nil
}

// fetchProfile saves a CPU profile of p over secs seconds.
func fetchProfile(ctx context.Context, p *proc, secs int, file string) error {
	return fetchProfileWith(ctx, http.DefaultClient, p, secs, file)
}

// fetchProfileWith is fetchProfile through hc (one that reaches p).
func fetchProfileWith(ctx context.Context, hc *http.Client, p *proc, secs int, file string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.debug, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
