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
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
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
		resp.Body = &relayBody{rc: resp.Body, f: f, w: bufio.NewWriterSize(f, 32<<10), h: sha256.New(), want: want, dir: dir}
		return nil
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Println("ready", l.Addr())
	return http.Serve(l, rp)
}

// relayBuffers are the relay's copy buffers: 256 KiB, as content-cache's
// chunks (httputil's default is 32 KiB).
type relayBuffers struct{ p *sync.Pool }

func (b relayBuffers) Get() []byte { return b.p.Get().([]byte) }

//lint:ignore SA6002 httputil.BufferPool hands back slices; one small allocation per body is fine.
func (b relayBuffers) Put(p []byte) { b.p.Put(p) }

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

func (r *relayProc) stop() {
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// floorScenario pulls fresh blobs and images cold from content-cache,
// distribution's proxy and the relay, side by side, and compares their
// time and CPU per byte.
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
	var cr *crane
	if b.crane != nil {
		if cr, err = newCrane(b.crane.bin, b.work, []string{b.direct[1].host, b.direct[2].host, relay.addr}, nil); err != nil {
			return err
		}
	}
	n := int64(b.o.blobSize)
	layer := int(b.o.imageSize) / b.o.imageLayers
	s := series{}
	for r := range b.o.repeats {
		logf("floor: cold blob and image pulls, repeat %d/%d", r+1, b.o.repeats)
		path, err := b.pushBlob(ctx, "bench/floor", n)
		if err != nil {
			return err
		}
		var img regtest.Image
		if cr != nil {
			img = regtest.RandomImage(int64(b.nextSeed()), b.o.imageLayers, layer)
			img.Repo, img.Tag = "bench/floor", fmt.Sprintf("r%d", r)
			if err := regtest.PushWith(ctx, b.hc, b.origin.URL(), benchUser, benchPassword, img); err != nil {
				return err
			}
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
			s.add(t.label+" blob MB/s", tm.mbps())
			s.add(t.label+" blob cpu", (c1-c0).Seconds()*1e3/(float64(n)/(1<<20)))
			if cr == nil {
				continue
			}
			b.settle(ctx)
			c0, _ = cpuTime(t.pid)
			d, err := cr.pull(ctx, t.host+"/"+img.Repo+":"+img.Tag)
			if err != nil {
				return err
			}
			b.quiesce(ctx, t.p, t.uploads)
			c1, _ = cpuTime(t.pid)
			s.add(t.label+" image s", d.Seconds())
			s.add(t.label+" image cpu", (c1-c0).Seconds()*1e3/(float64(layer*b.o.imageLayers)/(1<<20)))
		}
	}
	// vs is the median over the repeats of a's measure k over b's: each
	// repeat pairs pulls of the same blob or image.
	vs := func(a, b floorTarget, k string) float64 { return median(ratiosOf(s[a.label+" "+k], s[b.label+" "+k])) }
	cache, proxy, floor := ts[0], ts[1], ts[2]
	t := &table{head: []string{"", "cold blob: MB/s", "cold blob: CPU per MiB", "vs the floor", "image pull: time", "vs the floor", "image pull: CPU per MiB", "vs the floor"},
		align: []string{"l", "r", "r", "r", "r", "r", "r", "r"}}
	for i, tg := range ts {
		r1, r2, r3 := "1 (itself)", "1 (itself)", "1 (itself)"
		if i < 2 {
			r1, r2, r3 = fmtRatio(vs(tg, floor, "blob cpu")), fmtRatio(vs(tg, floor, "image s")), fmtRatio(vs(tg, floor, "image cpu"))
		}
		img, imgCPU := "–", "–"
		if cr != nil {
			img, imgCPU = fmt.Sprintf("%.2f s", s.med(tg.label+" image s")), fmt.Sprintf("%.2f ms", s.med(tg.label+" image cpu"))
		} else {
			r2, r3 = "–", "–"
		}
		t.row(tg.label, fmtMBps(s.med(tg.label+" blob MB/s")), fmt.Sprintf("%.2f ms", s.med(tg.label+" blob cpu")), r1, img, r2, imgCPU, r3)
	}
	fmt.Fprintf(&b.md, "### The floor: cold pulls against a relay doing only the per-byte work (%s blob; %d-layer %s image with crane)\n\n%s\n",
		fmtBytes(float64(n)), b.o.imageLayers, fmtBytes(float64(b.o.imageSize)), t)
	fmt.Fprintf(&b.md, "The relay (`bench/floor.go`) is a reverse proxy that tees each blob body into a file and SHA-256 on its way to the client and syncs and keeps the file if the digest matches: "+
		"the copies every verifying cache makes, and nothing else (no authorization, no last byte held, no log, no metrics). "+
		"Ratios are medians of the per-repeat ratios. If the relay needs X of a cache's CPU, no change to that cache's per-byte path takes it below X.\n\n")
	fmt.Fprintf(&b.md, "Cold CPU per byte of a blob, against distribution's proxy's: the relay %s, content-cache %s.",
		fmtRatio(vs(floor, proxy, "blob cpu")), fmtRatio(vs(cache, proxy, "blob cpu")))
	if cr != nil {
		fmt.Fprintf(&b.md, " Cold image pull time, against distribution's proxy's: the relay %s, content-cache %s.",
			fmtRatio(vs(floor, proxy, "image s")), fmtRatio(vs(cache, proxy, "image s")))
	}
	b.md.WriteString("\n\n")
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
