package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/content-cache/content-cache/internal/regtest"
)

// The wan-pull scenario (with -wan): cold pulls across the emulated WAN by
// a client that pulls as dockerd and containerd do: the manifest, then the
// config, then the layers 3 at a time, each request after the other on a
// long round trip. It compares origin direct, content-cache without and
// with prefetch on manifest, and distribution's proxy, for two image
// shapes (many small layers, a few large ones), on a WAN link shared by
// all connections and, with -wan-per-conn, also capped per connection as
// CDNs behind registries do.

// pullJobs is how many layers dockerd and containerd download at once by
// default.
const pullJobs = 3

// imageShape is one image of the scenario.
type imageShape struct {
	layers int
	size   int
}

func (s imageShape) String() string {
	return fmt.Sprintf("%d layers of %s", s.layers, fmtBytes(float64(s.size)))
}

// imageShapes is the -wan-images flag: LAYERSxSIZE, comma-separated.
type imageShapes []imageShape

func (s *imageShapes) String() string {
	var out []string
	for _, x := range *s {
		sz := size(x.size)
		out = append(out, fmt.Sprintf("%dx%s", x.layers, strings.ReplaceAll(sz.String(), " ", "")))
	}
	return strings.Join(out, ",")
}

func (s *imageShapes) Set(v string) error {
	var out imageShapes
	for _, part := range strings.Split(v, ",") {
		n, sz, ok := strings.Cut(strings.TrimSpace(part), "x")
		layers, err := strconv.Atoi(n)
		var bytes size
		if !ok || err != nil || layers <= 0 || bytes.Set(sz) != nil {
			return fmt.Errorf("expected LAYERSxSIZE, comma-separated, such as 12x512KiB,8x18MiB; got %q", part)
		}
		out = append(out, imageShape{layers, int(bytes)})
	}
	*s = out
	return nil
}

func (b *bench) wanPullScenario(ctx context.Context) error {
	if !b.o.wan {
		b.notes = append(b.notes, "The wan-pull scenario (prefetch) needs `-wan`.")
		return nil
	}
	shapes := b.o.wanImages
	perConn := []float64{0}
	if b.o.wanPerConn > 0 {
		perConn = append(perConn, b.o.wanPerConn)
	}
	var startBin func(bin, name, kind, opts string) (*proc, error)
	for vi, pc := range perConn {
		s, err := NewShaper(b.origin.addr, b.o.wanDelay, b.o.wanMbit*1e6)
		if err != nil {
			return err
		}
		s.perConn = pc * 1e6
		defer s.Close()
		start := func(name, kind, opts string) (*proc, error) {
			return startBin(b.o.bin, name, kind, opts)
		}
		startBin = func(bin, name, kind, opts string) (*proc, error) {
			p, err := startProc(ctx, b.hc, procSpec{bin: bin, dir: b.work, name: fmt.Sprintf("%s-%d", name, vi), kind: kind, htpasswd: filepath.Join(b.work, "htpasswd"),
				upstream: s.Addr, storage: b.storageYAML, tls: b.tls, cacheOptions: opts})
			if err == nil {
				b.procs = append(b.procs, p)
			}
			return p, err
		}
		cache, err := start("wanpull-cache", kindCache, "")
		if err != nil {
			return err
		}
		pre, err := start("wanpull-prefetch", kindCache, "        prefetch: true\n")
		if err != nil {
			return err
		}
		proxy, err := start("wanpull-proxy", kindProxy, "")
		if err != nil {
			return err
		}
		ts := []target{
			{label: "origin direct, across the WAN", host: s.Addr, p: b.origin},
			{label: "content-cache, no prefetch", host: cache.addr, p: cache, cache: true},
			{label: "content-cache, prefetch", host: pre.addr, p: pre, cache: true},
			{label: "distribution proxy", host: proxy.addr, p: proxy, cache: true},
		}
		if b.base != "" {
			// A/B: the base binary with prefetch, last so that the
			// indexes above stay.
			bp, err := startBin(b.base, "wanpull-prefetch-base", kindCache, "        prefetch: true\n")
			if err != nil {
				return err
			}
			ts = append(ts, target{label: baseLabel + ", prefetch", host: bp.addr, p: bp, cache: true, base: true})
		}
		link := fmt.Sprintf("%v round trip, %.0f Mbit/s shared", 2*b.o.wanDelay, b.o.wanMbit)
		if pc > 0 {
			link += fmt.Sprintf(", %.0f Mbit/s per connection", pc)
		}
		for _, shape := range shapes {
			sr, err := b.wanPullRun(ctx, ts, shape)
			if err != nil {
				return err
			}
			b.wanPullTable(fmt.Sprintf("Cold pull of %s across the emulated WAN (%s), %d layers at a time", shape, link, pullJobs), ts, sr, shape, pc > 0)
		}
	}
	return nil
}

func (b *bench) wanPullRun(ctx context.Context, ts []target, shape imageShape) (series, error) {
	s := series{}
	for r := range b.o.wanRepeats {
		seed := b.nextSeed()
		img := regtest.RandomImage(int64(seed), shape.layers, shape.size)
		img.Repo, img.Tag = "bench/wanpull", fmt.Sprintf("s%d", seed)
		if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img); err != nil {
			return nil, fmt.Errorf("pushing the image: %w", err)
		}
		for _, t := range rotate(ts, r) {
			logf("wan-pull: %s, %s, repeat %d/%d", shape, t.label, r+1, b.o.wanRepeats)
			b.settle(ctx)
			tMark, oMark, t0 := t.p.log.mark(), b.origin.log.mark(), time.Now()
			d, err := dockerPull(ctx, b.hc, t.url(), img, pullJobs)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", t.label, err)
			}
			s.add(t.label, d.Seconds())
			if b.o.wanTrace && r == 0 && t.p.kind == kindCache {
				if err := b.wanPullTrace(ctx, t, shape, t0, d, tMark, oMark); err != nil {
					return nil, err
				}
			}
		}
		d := s[ts[0].label][r]
		for _, t := range ts[1:] {
			s.add(t.label+" / direct", s[t.label][r]/d)
		}
		s.add("prefetch / no prefetch", s[ts[2].label][r]/s[ts[1].label][r])
		if len(ts) > 4 {
			s.add("prefetch: new / base", s[ts[2].label][r]/s[ts[4].label][r])
		}
	}
	return s, nil
}

func (b *bench) wanPullTable(title string, ts []target, s series, shape imageShape, perConn bool) {
	t := &table{head: []string{"", "cold pull", "time / origin direct's"}, align: []string{"l", "r", "r"}}
	t.row(ts[0].label, fmtSec(s.med(ts[0].label)), "1 (itself)")
	for _, tg := range ts[1:] {
		t.row(tg.label, fmtSec(s.med(tg.label)), fmtRatio(s.med(tg.label+" / direct"))+" ("+spread(s[tg.label+" / direct"], fmtRatio)+")")
	}
	fmt.Fprintf(&b.md, "### %s\n\n%s\n", title, t)
	fmt.Fprintf(&b.md, "Prefetch / no prefetch: %s (per repeat %s). The client: manifest by tag, config, then the layers %d at a time (dockerd's and containerd's defaults), on loopback to the caches; a fresh image each repeat.\n\n",
		fmtRatio(s.med("prefetch / no prefetch")), spread(s["prefetch / no prefetch"], fmtRatio), pullJobs)
	if len(ts) > 4 {
		fmt.Fprintf(&b.md, "A/B, with prefetch: new / base %s (per repeat %s).\n\n", fmtRatio(s.med("prefetch: new / base")), spread(s["prefetch: new / base"], fmtRatio))
	}
	pc := ""
	if perConn {
		pc = ", per-connection cap"
	}
	if shape.size < 1<<20 {
		v := s.med(ts[2].label + " / direct")
		b.addGoal(fmt.Sprintf("cold pull of %s across the WAN%s: content-cache with prefetch / origin direct", shape, pc), fmtRatio(v), spread(s[ts[2].label+" / direct"], fmtRatio), "≤ 0.7×", v <= 0.7, !math.IsNaN(v))
	} else {
		v := s.med("prefetch / no prefetch")
		b.addGoal(fmt.Sprintf("cold pull of %s across the WAN%s: content-cache with prefetch / without", shape, pc), fmtRatio(v), spread(s["prefetch / no prefetch"], fmtRatio), "≤ 1.0×", v <= 1.0, !math.IsNaN(v))
	}
}

// dockerPull pulls img from base as dockerd and containerd do (pullImage)
// and returns the time of the whole pull.
func dockerPull(ctx context.Context, hc *http.Client, base string, img regtest.Image, jobs int) (time.Duration, error) {
	start := time.Now()
	if _, err := pullImage(ctx, hc, base, img.Repo, img.Tag, jobs, false); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// pullStats is what one pull did: its blob bytes, and when (since the
// pull began) its phases ended.
type pullStats struct {
	bytes            int64
	manifest, config time.Duration // the manifest's and the config's last byte
	firstByte        time.Duration // the first layer byte
	lastStart        time.Duration // the last layer's first byte
}

// pullImage pulls repo:tag from base as dockerd and containerd do: the
// manifest by tag, then the config, then the layers jobs at a time, each
// read to the end and its length checked against the manifest's
// descriptor; with verify, each blob's digest is checked too.
func pullImage(ctx context.Context, hc *http.Client, base, repo, tag string, jobs int, verify bool) (pullStats, error) {
	start := time.Now()
	var st pullStats
	var body bytes.Buffer
	if _, err := getTo(ctx, hc, base+"/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {manifestAccept}}, -1, &body); err != nil {
		return st, err
	}
	st.manifest = time.Since(start)
	var m v1.Manifest
	if err := json.Unmarshal(body.Bytes(), &m); err != nil {
		return st, fmt.Errorf("the manifest of %s:%s: %w", repo, tag, err)
	}
	if len(m.Layers) == 0 || m.Config.Digest == "" {
		return st, fmt.Errorf("the manifest of %s:%s (%s) has no config or no layers", repo, tag, m.MediaType)
	}
	blob := func(d v1.Descriptor) (time.Duration, error) {
		var sink io.Writer
		var v digest.Verifier
		if verify {
			if err := d.Digest.Validate(); err != nil {
				return 0, err
			}
			v = d.Digest.Verifier()
			sink = v
		}
		t0 := time.Now()
		t, err := getTo(ctx, hc, base+blobPath(repo, d.Digest), nil, d.Size, sink)
		if err != nil {
			return 0, err
		}
		if v != nil && !v.Verified() {
			return 0, fmt.Errorf("GET %s: the body does not match its digest", blobPath(repo, d.Digest))
		}
		return t0.Add(t.ttfb).Sub(start), nil
	}
	if _, err := blob(m.Config); err != nil {
		return st, err
	}
	st.config = time.Since(start)
	st.bytes = m.Config.Size
	sem := make(chan struct{}, jobs)
	errs := make([]error, len(m.Layers))
	firsts := make([]time.Duration, len(m.Layers))
	var wg sync.WaitGroup
	for i, l := range m.Layers {
		st.bytes += l.Size
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			firsts[i], errs[i] = blob(l)
		})
	}
	wg.Wait()
	st.firstByte, st.lastStart = slices.Min(firsts), slices.Max(firsts)
	return st, errors.Join(errs...)
}

// wanPullTrace (with -trace) writes the timeline of one pull through the
// cache t: its own request lines and the origin's, relative to the pull's
// start (the origin's, 25 ms after the cache sent them, when the origin
// began and ended each request).
func (b *bench) wanPullTrace(ctx context.Context, t target, shape imageShape, t0 time.Time, d time.Duration, tMark, oMark int) error {
	b.settle(ctx)
	if err := t.p.log.sync(ctx, b.hc, t.p, &b.seq, true); err != nil {
		return err
	}
	if err := b.origin.log.sync(ctx, b.hc, b.origin, &b.seq, false); err != nil {
		return err
	}
	type ev struct {
		who string
		e   logEntry
	}
	var evs []ev
	for _, e := range t.p.log.between(tMark) {
		evs = append(evs, ev{"client → cache", e})
	}
	for _, e := range b.origin.log.between(oMark) {
		evs = append(evs, ev{"cache → origin", e})
	}
	evs = slices.DeleteFunc(evs, func(v ev) bool {
		return strings.Contains(v.e.uri, "bench-sync") || strings.HasPrefix(v.e.repo, "bench-sync/")
	})
	slices.SortStableFunc(evs, func(x, y ev) int { return x.e.start().Compare(y.e.start()) })
	tb := &table{head: []string{"request", "start", "end", "what", "status", "bytes"}, align: []string{"l", "r", "r", "l", "r", "r"}}
	ms := func(at time.Time) string { return fmt.Sprintf("%.0f ms", at.Sub(t0).Seconds()*1e3) }
	for _, v := range evs {
		what := v.e.method + " " + v.e.route()
		if dg := v.e.blobDigest(); dg != "" {
			what += " " + shortDigest(dg)
		}
		if v.e.result != "" {
			what += " (" + v.e.result + ")"
		}
		tb.row(v.who, ms(v.e.start()), ms(v.e.end), what, strconv.Itoa(v.e.status), strconv.FormatInt(v.e.written, 10))
	}
	fmt.Fprintf(&b.md, "#### Timeline: %s, %s (pull %s)\n\n%s\n", t.label, shape, fmtSec(d.Seconds()), tb)
	return nil
}
