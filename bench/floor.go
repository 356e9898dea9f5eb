package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/http/pprof"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/content-cache/content-cache/internal/regtest"
)

// The floor scenario (-only floor) measures how far the cold path is from
// the least work any verifying cache does per byte: read the upstream's
// socket, hash, write a file, write the client's socket. The relay below
// does exactly that and nothing else: a reverse proxy whose blob bodies are
// teed into a file and SHA-256 on their way to the client, the file synced
// and kept if the digest matches. It authorizes nothing, stores nothing it serves
// again, never holds the last byte, has no log and no metrics: no cache can
// use less CPU per byte with the same copies. content-cache, distribution's
// proxy and the relay pull the same blobs and images side by side.

// relayMain serves the relay on listen in front of upstream, keeping
// verified blobs under dir. The bench runs itself with -relay-listen for
// it, so that its CPU is a process of its own.
func relayMain(listen, upstream, dir string) error {
	u, err := url.Parse(upstream)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	rp.BufferPool = relayBuffers{&sync.Pool{New: func() any { return make([]byte, 256<<10) }}}
	rp.ModifyResponse = func(resp *http.Response) error {
		path := resp.Request.URL.Path
		i := strings.LastIndex(path, "/blobs/sha256:")
		if resp.Request.Method != http.MethodGet || resp.StatusCode != http.StatusOK || i < 0 {
			return nil
		}
		f, err := os.CreateTemp(dir, "upload-")
		if err != nil {
			return err
		}
		want := strings.TrimPrefix(path[i:], "/blobs/sha256:")
		resp.Body = &relayBody{rc: resp.Body, f: f, w: bufio.NewWriterSize(pieceWriter{f}, relayFileWrite), h: sha256.New(), want: want, dir: dir}
		return nil
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// The relay's CPU profile, for the profile scenario (its paths are
	// no registry's).
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.Handle("/", rp)
	fmt.Println("ready", l.Addr())
	return http.Serve(l, mux)
}

// relayBuffers are the relay's copy buffers: 256 KiB, as content-cache's
// chunks (httputil's default is 32 KiB).
type relayBuffers struct{ p *sync.Pool }

func (b relayBuffers) Get() []byte { return b.p.Get().([]byte) }

//lint:ignore SA6002 httputil.BufferPool hands back slices; one small allocation per body is fine.
func (b relayBuffers) Put(p []byte) { b.p.Put(p) }

// relayFileWrite is the largest write of the relay to its file: 32 KiB,
// as content-cache's (fileWrite in downstream/internal/store/upload.go)
// and distribution's proxy's. bufio.Writer hands a write larger than its
// buffer straight to the file, up to the 256 KiB of a socket read, and
// writes that size cost up to several times the CPU per byte (page-cache
// folios of that size, a costly allocation on a fragmented host, and the
// host's faults on memory given back to it): a floor that pays for what
// the caches avoid is no floor.
const relayFileWrite = 32 << 10

// pieceWriter writes to f at most relayFileWrite bytes at a time.
type pieceWriter struct{ f *os.File }

func (w pieceWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		k, err := w.f.Write(p[:min(len(p), relayFileWrite)])
		n += k
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// relayBody tees a blob body into a file and the hash; at the end it keeps
// the file as the digest if it matches, else removes it.
type relayBody struct {
	rc   io.ReadCloser
	f    *os.File
	w    *bufio.Writer
	h    hash.Hash
	want string
	dir  string
	done bool
}

func (r *relayBody) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.h.Write(p[:n])
		if _, werr := r.w.Write(p[:n]); werr != nil {
			return n, werr
		}
	}
	if err == io.EOF {
		r.finish()
	}
	return n, err
}

func (r *relayBody) finish() {
	if r.done {
		return
	}
	r.done = true
	name := r.f.Name()
	// Synced as every cache that keeps what it verified must: a crash
	// must not leave a renamed file with lost pages.
	ok := r.w.Flush() == nil && hex.EncodeToString(r.h.Sum(nil)) == r.want && r.f.Sync() == nil
	_ = r.f.Close()
	if ok && os.Rename(name, filepath.Join(r.dir, r.want)) == nil {
		return
	}
	_ = os.Remove(name)
}

func (r *relayBody) Close() error {
	if !r.done {
		r.done = true
		_ = r.f.Close()
		_ = os.Remove(r.f.Name())
	}
	return r.rc.Close()
}

// relayProc is the relay's process.
type relayProc struct {
	addr string
	dir  string // where it keeps blobs, and its upload-* files in progress
	cmd  *exec.Cmd
}

func (b *bench) startRelay(ctx context.Context) (*relayProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.work, "relay")
	cmd := exec.CommandContext(ctx, exe, "-relay-listen", "127.0.0.1:0", "-relay-upstream", b.origin.URL(), "-relay-dir", dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the relay did not start: %q %v", line, err)
	}
	return &relayProc{addr: addr, dir: dir, cmd: cmd}, nil
}

// asProc is the relay as a registry process of the harness, for the
// profile scenario: its profile is served on its own address.
func (r *relayProc) asProc() *proc {
	return &proc{name: "relay", scheme: "http", addr: r.addr, debug: r.addr, root: r.dir, cmd: r.cmd}
}

func (r *relayProc) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// floorScenario pulls fresh blobs and images cold from content-cache,
// distribution's proxy, the relay (and the A/B base binary), side by side,
// and compares their time and CPU per byte. Blobs of each of -floor-sizes
// are pulled in every repeat, so that the cost per request (the cache's
// decision, its upload's creation, commit and links; the relay's file
// creation, fsync and rename) is told apart from the cost per byte: the
// slope of CPU against size between the smallest and the largest blob.
func (b *bench) floorScenario(ctx context.Context) error {
	if b.o.tls {
		return errors.New("the floor scenario runs over plain HTTP only; leave it out with -only when -tls is set")
	}
	relay, err := b.startRelay(ctx)
	if err != nil {
		return err
	}
	defer relay.stop()
	type floorTarget struct {
		label   string
		host    string
		pid     int
		p       *proc  // nil for the relay
		uploads string // its files in progress (quiesce)
	}
	ts := []floorTarget{
		{b.direct[1].label, b.direct[1].host, b.direct[1].p.pid(), b.direct[1].p, b.uploadsGlob(b.direct[1].p)},
		{b.direct[2].label, b.direct[2].host, b.direct[2].p.pid(), b.direct[2].p, b.uploadsGlob(b.direct[2].p)},
		{"relay (the floor)", relay.addr, relay.cmd.Process.Pid, nil, filepath.Join(relay.dir, "upload-*")},
	}
	hosts := []string{b.direct[1].host, b.direct[2].host, relay.addr}
	bt, hasBase := baseOf(b.direct)
	if hasBase {
		ts = append(ts, floorTarget{bt.label, bt.host, bt.p.pid(), bt.p, b.uploadsGlob(bt.p)})
		hosts = append(hosts, bt.host)
	}
	var cr *crane
	if b.crane != nil && b.o.floorImage {
		if cr, err = newCrane(b.crane.bin, b.work, hosts, nil); err != nil {
			return err
		}
	}
	sizes := b.floorSizes()
	layer := int(b.o.imageSize) / b.o.imageLayers
	s := series{}
	load0 := loadAvg()
	for r := range b.o.repeats {
		logf("floor: cold blob and image pulls, repeat %d/%d", r+1, b.o.repeats)
		for _, n := range sizes {
			path, err := b.pushBlob(ctx, "bench/floor", n)
			if err != nil {
				return err
			}
			for i := range ts {
				t := ts[(i+r)%len(ts)]
				b.settle(ctx)
				c0, _ := cpuTime(t.pid)
				tm, err := get(ctx, b.hc, "http://"+t.host+path, nil, n)
				if err != nil {
					return err
				}
				b.quiesce(ctx, t.p, t.uploads)
				c1, _ := cpuTime(t.pid)
				k := floorKey(t.label, n)
				s.add(k+" MB/s", tm.mbps())
				s.add(k+" cpu", (c1-c0).Seconds()*1e3/(float64(n)/(1<<20)))
				s.add(k+" cpu total", (c1-c0).Seconds()*1e3)
			}
		}
		if cr == nil {
			continue
		}
		img := regtest.RandomImage(int64(b.nextSeed()), b.o.imageLayers, layer)
		img.Repo, img.Tag = "bench/floor", fmt.Sprintf("r%d", r)
		if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img); err != nil {
			return err
		}
		for i := range ts {
			t := ts[(i+r)%len(ts)]
			b.settle(ctx)
			c0, _ := cpuTime(t.pid)
			d, err := cr.pull(ctx, t.host+"/"+img.Repo+":"+img.Tag)
			if err != nil {
				return err
			}
			b.quiesce(ctx, t.p, t.uploads)
			c1, _ := cpuTime(t.pid)
			s.add(t.label+" image s", d.Seconds())
			s.add(t.label+" image cpu", (c1-c0).Seconds()*1e3/(float64(layer*b.o.imageLayers)/(1<<20)))
		}
	}
	load1 := loadAvg()
	// The cost per request and per MiB of each target, repeat by repeat:
	// the line through its CPU for the smallest and the largest blob.
	small, large := sizes[0], sizes[len(sizes)-1]
	if large > small {
		for _, t := range ts {
			cs, cl := s[floorKey(t.label, small)+" cpu total"], s[floorKey(t.label, large)+" cpu total"]
			for i := range min(len(cs), len(cl)) {
				perMiB := (cl[i] - cs[i]) / (float64(large-small) / (1 << 20))
				s.add(t.label+" per MiB", perMiB)
				s.add(t.label+" per request", cs[i]-perMiB*float64(small)/(1<<20))
			}
		}
	}
	// vs is the median over the repeats of a's measure k over b's: each
	// repeat pairs pulls of the same blob or image.
	vsAll := func(a, b floorTarget, k string) []float64 { return ratiosOf(s[a.label+k], s[b.label+k]) }
	vs := func(a, b floorTarget, k string) float64 { return median(vsAll(a, b, k)) }
	cache, proxy, floor := ts[0], ts[1], ts[2]
	fmt.Fprintf(&b.md, "### The floor: cold pulls against a relay doing only the per-byte work (blobs of %s", fmtSizes(sizes))
	if cr != nil {
		fmt.Fprintf(&b.md, "; %d-layer %s image with crane", b.o.imageLayers, fmtBytes(float64(b.o.imageSize)))
	}
	fmt.Fprintf(&b.md, ")\n\nLoad average (1, 5, 15 min) at the start: %s; at the end: %s.\n\n", load0, load1)
	t := &table{head: []string{"", "blob", "cold: MB/s", "CPU per MiB", "vs the floor (median)", "per repeat: lowest … highest"},
		align: []string{"l", "r", "r", "r", "r", "r"}}
	for _, n := range sizes {
		for i, tg := range ts {
			k := floorKey(tg.label, n)
			r1, r2 := "1 (itself)", ""
			if i != 2 {
				rs := vsAll(tg, floor, floorKeySuffix(n)+" cpu")
				r1, r2 = fmtRatio(median(rs)), spread(rs, fmtRatio)
			}
			t.row(tg.label, fmtBytes(float64(n)), fmtMBps(s.med(k+" MB/s")), fmtMS(s.med(k+" cpu")), r1, r2)
		}
	}
	b.md.WriteString(t.String() + "\n")
	if large > small {
		t := &table{head: []string{"", "CPU per request", "CPU per MiB (slope)", "per MiB vs the floor (median)", "per repeat: lowest … highest"},
			align: []string{"l", "r", "r", "r", "r"}}
		for i, tg := range ts {
			r1, r2 := "1 (itself)", ""
			if i != 2 {
				rs := vsAll(tg, floor, " per MiB")
				r1, r2 = fmtRatio(median(rs)), spread(rs, fmtRatio)
			}
			t.row(tg.label, fmtMS(s.med(tg.label+" per request")), fmtMS(s.med(tg.label+" per MiB")), r1, r2)
		}
		fmt.Fprintf(&b.md, "Per request and per byte: each repeat's line through the CPU of the %s and the %s blob (medians of the repeats).\n\n%s\n",
			fmtBytes(float64(small)), fmtBytes(float64(large)), t)
	}
	if cr != nil {
		t := &table{head: []string{"", "image pull: time", "vs the floor", "image pull: CPU per MiB", "vs the floor"},
			align: []string{"l", "r", "r", "r", "r"}}
		for i, tg := range ts {
			r1, r2 := "1 (itself)", "1 (itself)"
			if i != 2 {
				r1, r2 = fmtRatio(vs(tg, floor, " image s")), fmtRatio(vs(tg, floor, " image cpu"))
			}
			t.row(tg.label, fmt.Sprintf("%.2f s", s.med(tg.label+" image s")), r1, fmt.Sprintf("%.2f ms", s.med(tg.label+" image cpu")), r2)
		}
		b.md.WriteString(t.String() + "\n")
	}
	fmt.Fprintf(&b.md, "The relay (`bench/floor.go`) is a reverse proxy that tees each blob body into a file and SHA-256 on its way to the client and syncs and keeps the file if the digest matches: "+
		"the copies every verifying cache makes, and nothing else (no authorization, no last byte held, no log, no metrics). "+
		"CPU is each process's CPU clock (all threads, to the nanosecond), read after settling (no fill in flight, dirty pages written back) and again once its upload is committed. "+
		"Ratios are medians of the per-repeat ratios. If the relay needs X of a cache's CPU, no change to that cache's per-byte path takes it below X.\n\n")
	ref := floorKeySuffix(sizes[len(sizes)-1])
	for _, n := range sizes {
		if n == int64(b.o.blobSize) {
			ref = floorKeySuffix(n)
		}
	}
	fmt.Fprintf(&b.md, "Cold CPU per byte of a blob (%s), against distribution's proxy's: the relay %s, content-cache %s.",
		strings.TrimPrefix(ref, " "), fmtRatio(vs(floor, proxy, ref+" cpu")), fmtRatio(vs(cache, proxy, ref+" cpu")))
	if cr != nil {
		fmt.Fprintf(&b.md, " Cold image pull time, against distribution's proxy's: the relay %s, content-cache %s.",
			fmtRatio(vs(floor, proxy, " image s")), fmtRatio(vs(cache, proxy, " image s")))
	}
	b.md.WriteString("\n\n")
	rs := vsAll(cache, floor, ref+" cpu")
	b.addGoal(fmt.Sprintf("cold CPU per MiB of a %s blob ≤ 1.05× the floor relay's", strings.TrimPrefix(ref, " ")),
		fmtRatio(median(rs)), spread(rs, fmtRatio), "≤ 1.05×", median(rs) <= 1.05, len(rs) > 0)
	if hasBase {
		base := ts[3]
		var ms []abMetric
		for _, n := range sizes {
			k := floorKeySuffix(n)
			ms = append(ms, abMetric{"cold CPU per MiB," + k, cache.label + k + " cpu", base.label + k + " cpu", fmtMS, false})
		}
		if large > small {
			ms = append(ms, abMetric{"CPU per MiB (slope)", cache.label + " per MiB", base.label + " per MiB", fmtMS, false},
				abMetric{"CPU per request", cache.label + " per request", base.label + " per request", fmtMS, false})
		}
		if cr != nil {
			ms = append(ms, abMetric{"image pull: CPU per MiB", cache.label + " image cpu", base.label + " image cpu", fmtMS, false})
		}
		b.abTable("the floor scenario, cold", s, ms)
	}
	return nil
}

// floorSizes are the blob sizes of the floor scenario, smallest first:
// -floor-sizes, else -blob-size alone.
func (b *bench) floorSizes() []int64 {
	var out []int64
	for _, n := range b.o.floorSizes {
		out = append(out, int64(n))
	}
	if len(out) == 0 {
		out = append(out, int64(b.o.blobSize))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// floorKey names a target's series for one blob size.
func floorKey(label string, n int64) string { return label + floorKeySuffix(n) }

func floorKeySuffix(n int64) string { return " " + fmtBytes(float64(n)) }

func fmtSizes(ns []int64) string {
	var out []string
	for _, n := range ns {
		out = append(out, fmtBytes(float64(n)))
	}
	return strings.Join(out, " and ")
}

// sizes is a comma-separated list of sizes (a flag).
type sizes []size

func (s *sizes) String() string {
	var out []string
	for _, n := range *s {
		out = append(out, n.String())
	}
	return strings.Join(out, ",")
}

func (s *sizes) Set(v string) error {
	*s = nil
	for _, f := range strings.Split(v, ",") {
		var n size
		if err := n.Set(f); err != nil {
			return err
		}
		*s = append(*s, n)
	}
	return nil
}

// ratiosOf divides a by b element by element.
func ratiosOf(a, b []float64) []float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		r = append(r, a[i]/b[i])
	}
	return r
}
