package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// The pull-trace scenario (-trace, or -only pull-trace): cold crane pulls
// of a fresh image from each target, drawn as a timeline from the
// registries' own logs: the requests crane made to the target and those the
// target made to the origin, each with its start (the log line's time minus
// its duration) and end, relative to crane's start. Nothing sits in the data
// path. It shows where the cold pull's time goes: crane's start, the ping and
// the manifest, the blobs (how long a cache takes to ask the origin, how
// long the origin takes, and how long after the origin's last byte the
// client gets its own), crane's finish; and the round trips to the origin
// and the CPU per MiB of each process.
//
// The servers log when a request ends: a client's time to first byte is not
// in the logs, so a layer is described by its whole duration and by where
// the origin's request sits inside it.

// layerMin is the size above which a blob counts as a layer (the config is
// smaller): what the per-layer figures take.
const layerMin = 64 << 10

// pullTrace is what one cold pull of one target did.
type pullTrace struct {
	label              string
	total              time.Duration
	cpuPerMiB, oCPU    float64 // ms per MiB of the image: the target, the origin
	sysPerMiB          float64 // the target's system time alone
	client, origin     []logEntry
	t0                 time.Time
	isOrigin           bool
	maxBlobsInFlight   int
	layers             []layerTrace
	configDur          time.Duration
	firstReq, mfstEnd  time.Duration // from crane's start
	replay             replayTrace   // the same pull by the harness's own client, of another fresh image
	firstBlob, lastEnd time.Duration
}

// layerTrace is one layer of a pull: the client's request at the target
// and, for a cache, the origin's request for it.
type layerTrace struct {
	digest       string
	start, end   time.Duration // the client's request, from crane's start
	oStart, oEnd time.Duration // the origin's GET of it (caches)
	hasOrigin    bool
	result       string
	bytes        int64
}

func (b *bench) traceScenario(ctx context.Context) error {
	ts := b.direct
	layer := int(b.o.imageSize) / b.o.imageLayers
	mib := float64(layer*b.o.imageLayers) / (1 << 20)
	traces := map[string][]pullTrace{}
	for r := range b.o.repeats {
		seed := b.nextSeed()
		img := regtest.RandomImage(int64(seed), b.o.imageLayers, layer)
		img.Repo, img.Tag = "bench/trace", fmt.Sprintf("s%d", seed)
		if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img); err != nil {
			return fmt.Errorf("pushing the image: %w", err)
		}
		// A second image for the harness's own pull, which sees each
		// layer's time to first byte (crane's is not in the logs).
		img2 := regtest.RandomImage(int64(b.nextSeed()), b.o.imageLayers, layer)
		img2.Repo, img2.Tag = "bench/trace", fmt.Sprintf("s%d-go", seed)
		if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img2); err != nil {
			return fmt.Errorf("pushing the image: %w", err)
		}
		logf("pull trace, repeat %d/%d", r+1, b.o.repeats)
		for _, t := range rotate(ts, r) {
			tr, err := b.tracePull(ctx, t, t.host+"/"+img.Repo+":"+img.Tag, mib)
			if err != nil {
				return err
			}
			b.settle(ctx)
			if tr.replay, err = replayPull(ctx, b.hc, t.url(), img2, craneJobs); err != nil {
				return err
			}
			traces[t.label] = append(traces[t.label], tr)
		}
	}
	b.traceTables(ts, traces)
	return nil
}

// tracePull runs one cold crane pull of ref from t and collects its trace.
func (b *bench) tracePull(ctx context.Context, t target, ref string, mib float64) (pullTrace, error) {
	// The push's lines must not count as the pull's.
	if err := b.origin.log.sync(ctx, b.hc, b.origin, &b.seq, false); err != nil {
		return pullTrace{}, err
	}
	tMark, oMark := t.p.log.mark(), b.origin.log.mark()
	b.settle(ctx)
	u0, s0, _ := cpuTimes(t.p.pid())
	o0 := cpuOf(b.origin)
	t0 := time.Now()
	d, err := b.crane.pull(ctx, ref)
	if err != nil {
		return pullTrace{}, err
	}
	b.quiesce(ctx, t.p, b.uploadsGlob(t.p)) // its commits count (quiesce.go)
	u1, s1, _ := cpuTimes(t.p.pid())
	cpu, sys, ocpu := u1+s1-u0-s0, s1-s0, cpuOf(b.origin)-o0
	if t.p != b.origin {
		if err := t.p.log.sync(ctx, b.hc, t.p, &b.seq, t.p.kind == kindCache); err != nil {
			return pullTrace{}, err
		}
	}
	if err := b.origin.log.sync(ctx, b.hc, b.origin, &b.seq, false); err != nil {
		return pullTrace{}, err
	}
	notSync := func(es []logEntry) []logEntry {
		return slices.DeleteFunc(es, func(e logEntry) bool {
			return strings.Contains(e.uri, "bench-sync") || strings.HasPrefix(e.repo, "bench-sync/")
		})
	}
	tr := pullTrace{label: t.label, total: d, t0: t0, isOrigin: t.p == b.origin,
		cpuPerMiB: cpu.Seconds() * 1e3 / mib, sysPerMiB: sys.Seconds() * 1e3 / mib, oCPU: ocpu.Seconds() * 1e3 / mib,
		client: notSync(t.p.log.between(tMark)), origin: notSync(b.origin.log.between(oMark))}
	if tr.isOrigin {
		tr.cpuPerMiB, tr.sysPerMiB = math.NaN(), math.NaN()
	}
	tr.analyse()
	return tr, nil
}

func (tr *pullTrace) rel(at time.Time) time.Duration { return at.Sub(tr.t0) }

// analyse derives the timeline figures from the log entries.
func (tr *pullTrace) analyse() {
	sort.Slice(tr.client, func(i, j int) bool { return tr.client[i].start().Before(tr.client[j].start()) })
	sort.Slice(tr.origin, func(i, j int) bool { return tr.origin[i].start().Before(tr.origin[j].start()) })
	originGet := map[string]logEntry{}
	for _, e := range tr.origin {
		if e.completed() && e.method == http.MethodGet && e.blobDigest() != "" {
			originGet[e.blobDigest()] = e
		}
	}
	tr.firstReq, tr.mfstEnd, tr.firstBlob = -1, -1, -1
	type edge struct {
		at time.Duration
		d  int
	}
	var edges []edge
	for _, e := range tr.client {
		start, end := tr.rel(e.start()), tr.rel(e.end)
		if tr.firstReq < 0 || start < tr.firstReq {
			tr.firstReq = start
		}
		tr.lastEnd = max(tr.lastEnd, end)
		switch e.route() {
		case "manifest":
			tr.mfstEnd = max(tr.mfstEnd, end)
		case "blob":
			if e.method != http.MethodGet || e.status >= 300 {
				continue
			}
			if tr.firstBlob < 0 || start < tr.firstBlob {
				tr.firstBlob = start
			}
			edges = append(edges, edge{start, 1}, edge{end, -1})
			if e.written < layerMin {
				tr.configDur = e.dur
				continue
			}
			l := layerTrace{digest: e.blobDigest(), start: start, end: end, result: e.result, bytes: e.written}
			if o, ok := originGet[l.digest]; ok && !tr.isOrigin {
				l.oStart, l.oEnd, l.hasOrigin = tr.rel(o.start()), tr.rel(o.end), true
			}
			tr.layers = append(tr.layers, l)
		}
	}
	sort.Slice(edges, func(i, j int) bool {
		return edges[i].at < edges[j].at || edges[i].at == edges[j].at && edges[i].d < edges[j].d
	})
	n := 0
	for _, e := range edges {
		n += e.d
		tr.maxBlobsInFlight = max(tr.maxBlobsInFlight, n)
	}
}

// originCounts are the origin's answers during the pull by kind.
func (tr *pullTrace) originCounts() map[string]int {
	c := map[string]int{}
	for _, e := range tr.origin {
		switch {
		case e.status == http.StatusUnauthorized:
			c["401"]++
		case !e.completed() && e.msg != "response completed with error":
			continue
		default:
			c[e.method+" "+e.route()]++
		}
	}
	return c
}

// originNonBlob is the origin's time on requests other than blob GETs.
func (tr *pullTrace) originNonBlob() time.Duration {
	var d time.Duration
	for _, e := range tr.origin {
		if !(e.route() == "blob" && e.method == http.MethodGet) {
			d += e.dur
		}
	}
	return d
}

func ms(d time.Duration) float64 {
	if d < 0 {
		return math.NaN()
	}
	return d.Seconds() * 1e3
}

// medianOf is the median of f over the traces.
func medianOf(trs []pullTrace, f func(pullTrace) float64) float64 {
	var xs []float64
	for _, tr := range trs {
		if v := f(tr); !math.IsNaN(v) {
			xs = append(xs, v)
		}
	}
	return median(xs)
}

// layerMedian is the median of f over every layer of every trace.
func layerMedian(trs []pullTrace, f func(layerTrace) (float64, bool)) float64 {
	var xs []float64
	for _, tr := range trs {
		for _, l := range tr.layers {
			if v, ok := f(l); ok {
				xs = append(xs, v)
			}
		}
	}
	return median(xs)
}

func (b *bench) traceTables(ts []target, traces map[string][]pullTrace) {
	n := len(traces[ts[0].label])
	fmt.Fprintf(&b.md, "### Cold image pull, traced: %d layers (%s) pulled with crane, on loopback\n\n", b.o.imageLayers, fmtBytes(float64(b.o.imageSize)))
	fmt.Fprintf(&b.md, "From the registries' logs: each request's start is its log line's time minus its duration; times in ms from crane's start; medians over %d repeats (a fresh image each).\n\n", n)

	t := &table{head: []string{"", "pull", "crane start → first request", "→ manifest answered", "→ first blob request", "blob phase (first blob request → last response)", "last response → crane exits", "layers in flight (most)"},
		align: []string{"l", "r", "r", "r", "r", "r", "r", "r"}}
	for _, tg := range ts {
		trs := traces[tg.label]
		t.row(tg.label, fmtSec(medianOf(trs, func(t pullTrace) float64 { return t.total.Seconds() })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.firstReq) })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.mfstEnd) })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.firstBlob) })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.lastEnd - t.firstBlob) })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.total - t.lastEnd) })),
			fmtCount(medianOf(trs, func(t pullTrace) float64 { return float64(t.maxBlobsInFlight) })))
	}
	b.md.WriteString(t.String() + "\n")

	t = &table{head: []string{"", "layer request (server side)", "→ origin asked (cache's lead)", "origin's GET of the layer", "origin's last byte → client's last byte (tail)", "config blob request"},
		align: []string{"l", "r", "r", "r", "r", "r"}}
	for _, tg := range ts {
		trs := traces[tg.label]
		lead, odur, tail := "–", "–", "–"
		if tg.cache {
			lead = fmtMS(layerMedian(trs, func(l layerTrace) (float64, bool) { return ms(l.oStart - l.start), l.hasOrigin }))
			odur = fmtMS(layerMedian(trs, func(l layerTrace) (float64, bool) { return ms(l.oEnd - l.oStart), l.hasOrigin }))
			tail = fmtMS(layerMedian(trs, func(l layerTrace) (float64, bool) { return (l.end - l.oEnd).Seconds() * 1e3, l.hasOrigin }))
		}
		t.row(tg.label, fmtMS(layerMedian(trs, func(l layerTrace) (float64, bool) { return ms(l.end - l.start), true })), lead, odur, tail,
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.configDur) })))
	}
	b.md.WriteString("Per layer (medians over every layer of every repeat):\n\n" + t.String() + "\n")

	kinds := []string{"GET base", "GET manifest", "HEAD manifest", "GET blob", "HEAD blob", "401"}
	head := []string{"", "requests to it: ping / manifest / blob"}
	for _, k := range kinds {
		head = append(head, "origin: "+k)
	}
	head = append(head, "origin's time on other than blob GETs (sum)", "CPU per MiB: process (of it system) / origin")
	t = &table{head: head, align: []string{"l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r"}}
	for _, tg := range ts {
		trs := traces[tg.label]
		row := []string{tg.label}
		count := func(route string) float64 {
			return medianOf(trs, func(t pullTrace) float64 {
				c := 0
				for _, e := range t.client {
					if e.route() == route {
						c++
					}
				}
				return float64(c)
			})
		}
		row = append(row, fmtCount(count("base"))+" / "+fmtCount(count("manifest"))+" / "+fmtCount(count("blob")))
		for _, k := range kinds {
			row = append(row, fmtCount(medianOf(trs, func(t pullTrace) float64 { return float64(t.originCounts()[k]) })))
		}
		row = append(row, fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.originNonBlob()) })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return t.cpuPerMiB }))+" ("+fmtMS(medianOf(trs, func(t pullTrace) float64 { return t.sysPerMiB }))+") / "+
				fmtMS(medianOf(trs, func(t pullTrace) float64 { return t.oCPU })))
		t.row(row...)
	}
	b.md.WriteString("Requests per pull (origin: its answers during the pull, by method and route; 401: authorization challenges):\n\n" + t.String() + "\n")
	if cp, pp := traces[ts[1].label], traces[ts[2].label]; len(cp) > 0 && len(pp) > 0 {
		var rs []float64
		for i := range min(len(cp), len(pp)) {
			rs = append(rs, cp[i].total.Seconds()/pp[i].total.Seconds())
		}
		fmt.Fprintf(&b.md, "content-cache / distribution's proxy, cold pull time: %s (per repeat %s).\n\n", fmtRatio(median(rs)), spread(rs, fmtRatio))
	}

	t = &table{head: []string{"", "pull", "→ manifest", "→ first layer's first byte", "layer: time to first byte", "layer: time to last byte", "slowest layer: time to last byte"},
		align: []string{"l", "r", "r", "r", "r", "r", "r"}}
	for _, tg := range ts {
		trs := traces[tg.label]
		var ttfb, ttlb []float64
		for _, tr := range trs {
			for _, l := range tr.replay.layers {
				ttfb = append(ttfb, ms(l.ttfb))
				ttlb = append(ttlb, ms(l.total))
			}
		}
		t.row(tg.label, fmtSec(medianOf(trs, func(t pullTrace) float64 { return t.replay.total.Seconds() })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.replay.manifest) })),
			fmtMS(medianOf(trs, func(t pullTrace) float64 { return ms(t.replay.firstByte) })),
			fmtMS(median(ttfb)), fmtMS(median(ttlb)),
			fmtMS(medianOf(trs, func(t pullTrace) float64 {
				var worst time.Duration
				for _, l := range t.replay.layers {
					worst = max(worst, l.total)
				}
				return ms(worst)
			})))
	}
	fmt.Fprintf(&b.md, "The same pull by the harness's own client (a manifest GET, the layers %d at a time, then the config, as crane does; another fresh image), "+
		"timed at the client; per layer, medians over every layer of every repeat:\n\n%s\n", craneJobs, t)

	// The last repeat, request by request.
	b.md.WriteString("<details><summary>The last repeat, request by request</summary>\n\n")
	for _, tg := range ts {
		trs := traces[tg.label]
		if len(trs) == 0 {
			continue
		}
		tr := trs[len(trs)-1]
		t := &table{head: []string{"who", "request", "start", "end", "duration", "status", "bytes", "result"}, align: []string{"l", "l", "r", "r", "r", "r", "r", "l"}}
		add := func(who string, es []logEntry) {
			for _, e := range es {
				what := e.method + " " + e.route()
				if d := e.blobDigest(); d != "" {
					what += " " + shortDigest(d)
				}
				t.row(who, what, fmtMS(ms(tr.rel(e.start()))), fmtMS(ms(tr.rel(e.end))), fmtMS(ms(e.dur)), fmt.Sprint(e.status), fmtBytes(float64(e.written)), e.result)
			}
		}
		add("client → "+tg.label, tr.client)
		if !tr.isOrigin {
			add("→ origin", tr.origin)
		}
		fmt.Fprintf(&b.md, "%s, pull of %s:\n\n%s\n", tg.label, fmtSec(tr.total.Seconds()), t)
	}
	b.md.WriteString("</details>\n\n")
}

func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 8 {
		return hex[:8]
	}
	return d
}

// craneJobs is how many blobs crane fetches at once (its default, seen as
// "layers in flight" in the trace).
const craneJobs = 4

// replayTrace is a pull by the harness's own client, timed at the client.
type replayTrace struct {
	total, manifest, firstByte time.Duration // from the start of the pull
	layers                     []timing      // per layer, each from its own request's start
}

// replayPull pulls img from base as crane would: the manifest by tag, then
// its blobs, jobs at a time, each read to the end.
func replayPull(ctx context.Context, hc *http.Client, base string, img regtest.Image, jobs int) (replayTrace, error) {
	var rt replayTrace
	// The digests first: hashing the layers takes longer than the pull.
	type blob struct {
		path string
		size int64
	}
	var blobs []blob
	for _, l := range img.Layers {
		blobs = append(blobs, blob{blobPath(img.Repo, digest.FromBytes(l)), int64(len(l))})
	}
	configPath := blobPath(img.Repo, digest.FromBytes(img.Config))
	start := time.Now()
	if _, err := get(ctx, hc, base+"/v2/"+img.Repo+"/manifests/"+img.Tag, http.Header{"Accept": {manifestAccept}}, int64(len(img.Manifest))); err != nil {
		return rt, err
	}
	rt.manifest = time.Since(start)
	results := make([]timing, len(blobs))
	starts := make([]time.Duration, len(blobs))
	errs := make([]error, len(blobs))
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i, bl := range blobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			starts[i] = time.Since(start)
			results[i], errs[i] = get(ctx, hc, base+bl.path, nil, bl.size)
		}()
	}
	wg.Wait()
	// crane asks for the config after the layers (seen in the traces).
	if _, err := get(ctx, hc, base+configPath, nil, int64(len(img.Config))); err != nil {
		return rt, err
	}
	rt.total = time.Since(start)
	rt.firstByte = -1
	for i := range blobs {
		if errs[i] != nil {
			return rt, errs[i]
		}
		rt.layers = append(rt.layers, results[i])
		if fb := starts[i] + results[i].ttfb; rt.firstByte < 0 || fb < rt.firstByte {
			rt.firstByte = fb
		}
	}
	return rt, nil
}
