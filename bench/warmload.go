package main

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The warm-load scenario: serving capacity on warm content, which is most
// of a cache's traffic. Many clients (wrk, a process of its own) GET warm
// blobs for a while from each server in turn; the server's CPU per MB and
// per request, and its throughput, are compared with nginx (Debian,
// sendfile on) serving the same files, the anchor of what a server can do
// on this machine.
//
// Every server runs in a network namespace the harness makes (srv): nginx
// over the origin's blob files, the plain registry (a second origin process
// over the same storage), content-cache (and the A/B base), and their TLS
// twins. wrk runs in srv itself (loopback), or in a second namespace (cli)
// across a veth pair, a path through the stack like a real NIC's.

// warmServer is one row of the warm-load tables.
type warmServer struct {
	label string
	url   string // scheme://host:port as seen in srv
	port  string // for the veth URL
	cpu   func() time.Duration
	proc  *proc       // nil for nginx
	base  bool        // the A/B base binary
	tls   *tls.Config // non-nil: served over HTTPS
}

// warmCell is one measurement: a set of blobs, a number of clients, a path.
type warmCell struct {
	name  string
	small bool // 4 KiB blobs: requests are what matters
	conns int
	veth  bool
	tls   bool
	paths []string
}

func (b *bench) warmLoadScenario(ctx context.Context) error {
	for _, bin := range []string{"ip", "nginx", "wrk"} {
		if _, err := exec.LookPath(bin); err != nil {
			b.notes = append(b.notes, fmt.Sprintf("warm-load not run: %s not found (Debian packages iproute2, nginx, wrk).", bin))
			return nil
		}
	}
	if os.Geteuid() != 0 {
		b.notes = append(b.notes, "warm-load not run: it needs root (network namespaces).")
		return nil
	}
	logf("warm-load: pushing 4 blobs of %s and 8 of 4 KiB", fmtBytes(float64(b.o.warmBigSize)))
	var big, small []string
	for range 4 {
		p, err := b.pushBlob(ctx, "bench/warm", int64(b.o.warmBigSize))
		if err != nil {
			return err
		}
		big = append(big, p)
	}
	for range 8 {
		p, err := b.pushBlob(ctx, "bench/warm", 4<<10)
		if err != nil {
			return err
		}
		small = append(small, p)
	}
	np, err := newNetPair(ctx)
	if err != nil {
		b.notes = append(b.notes, fmt.Sprintf("warm-load not run: %v", err))
		return nil
	}
	var procs []*proc
	var nginx *exec.Cmd
	defer func() {
		for _, p := range procs {
			p.stop()
		}
		if nginx != nil {
			_ = nginx.Process.Signal(syscall.SIGQUIT)
			_ = nginx.Wait()
		}
		np.close()
	}()
	hc := nsClient(np.srv)
	if err := os.MkdirAll(filepath.Join(b.work, "warm-tls"), 0o755); err != nil {
		return err
	}
	tf, err := newTLSFiles(filepath.Join(b.work, "warm-tls"))
	if err != nil {
		return err
	}
	fsStorage := func(_, root string) string { return fmt.Sprintf("  filesystem: {rootdirectory: %s}\n", root) }
	start := func(bin, name, kind, upstream string, serveTLS *tlsFiles, root string) (*proc, error) {
		p, err := startProc(ctx, hcFor(hc, serveTLS), procSpec{bin: bin, dir: b.work, name: name, kind: kind, htpasswd: filepath.Join(b.work, "htpasswd"),
			upstream: upstream, storage: fsStorage, netns: np.srv, serveTLS: serveTLS, root: root})
		if err == nil {
			procs = append(procs, p)
			p.drainOnly.Store(true) // nothing here reads their request lines

		}
		return p, err
	}
	logf("warm-load: starting nginx, the plain registry and the caches in namespace %s", np.srv)
	origin, err := start(b.o.bin, "warm-origin", kindOrigin, "", nil, b.origin.root)
	if err != nil {
		return err
	}
	up := "127.0.0.1:" + portOf(origin.addr)
	plain := []warmServer{{label: "plain registry (distribution)", proc: origin}}
	var tlsRows []warmServer
	bins := []struct {
		bin, label string
		base       bool
	}{{b.o.bin, "content-cache", false}}
	if b.base != "" {
		bins = append(bins, struct {
			bin, label string
			base       bool
		}{b.base, baseLabel, true})
	}
	// Every cache (plain and TLS, new and base) shares one storage, and
	// nginx serves its blob files: all of them send the same page-cache
	// pages. The kernel keeps a file's pages in folios of the size of the
	// writes that made them (32 KiB here), and may split them later (under
	// the memory cgroup's reclaim: 4 KiB folios); sendfile's CPU per byte
	// grows with the number of folios it handles (4 KiB against 32 KiB
	// folios: 1.4x, the same binary in the same run). Over the origin's
	// files, nginx measured the page cache's state as much as the servers.
	cacheRoot := filepath.Join(b.work, "warm-cache-storage")
	for i, x := range bins {
		c, err := start(x.bin, fmt.Sprintf("warm-cache-%d", i), kindCache, up, nil, cacheRoot)
		if err != nil {
			return err
		}
		plain = append(plain, warmServer{label: x.label, proc: c, base: x.base})
		ct, err := start(x.bin, fmt.Sprintf("warm-cache-tls-%d", i), kindCache, up, tf, cacheRoot)
		if err != nil {
			return err
		}
		tlsRows = append(tlsRows, warmServer{label: x.label, proc: ct, base: x.base, tls: &tls.Config{RootCAs: tf.pool}})
	}
	ngx, err := startNginx(ctx, hc, b.work, np.srv, cacheRoot, tf)
	if err != nil {
		return err
	}
	nginx = ngx.cmd
	plain = append([]warmServer{{label: "nginx (sendfile on)", url: "http://127.0.0.1:" + ngx.port, port: ngx.port, cpu: ngx.cpu}}, plain...)
	tlsRows = append([]warmServer{{label: "nginx (sendfile on)", url: "https://127.0.0.1:" + ngx.tlsPort, port: ngx.tlsPort, cpu: ngx.cpu, tls: &tls.Config{RootCAs: tf.pool}}}, tlsRows...)
	for _, rows := range [][]warmServer{plain, tlsRows} {
		for i := range rows {
			if p := rows[i].proc; p != nil {
				rows[i].url, rows[i].port = p.URL(), portOf(p.addr)
				rows[i].cpu = func() time.Duration { return cpuOf(p) }
			}
		}
	}
	// Warm: every blob through every server, then once more once the
	// caches' fills are done (a hit), so that the runs below are all hits.
	// The caches come first: their fills write the files nginx serves.
	for _, rows := range [][]warmServer{plain, tlsRows} {
		for _, s := range cachesFirst(rows) {
			c := hcFor(hc, nil)
			if s.tls != nil {
				c = hcFor(hc, tf)
			}
			for pass := range 2 {
				for _, p := range append(append([]string{}, big...), small...) {
					if _, err := get(ctx, c, s.url+p, nil, -1); err != nil {
						return fmt.Errorf("warm-load: warming %s: %w", s.label, err)
					}
				}
				if s.proc != nil && s.proc.kind == kindCache && pass == 0 {
					if err := waitFillsDone(ctx, hc, s.proc); err != nil {
						return err
					}
				}
			}
		}
	}
	syscall.Sync()

	d := b.o.warmDuration
	cells := []warmCell{}
	for _, veth := range []bool{false, true} {
		path := "loopback"
		if veth {
			path = "veth"
		}
		cells = append(cells,
			warmCell{name: fmt.Sprintf("4 × %s, 16 clients, %s", fmtBytes(float64(b.o.warmBigSize)), path), conns: 16, veth: veth, paths: big},
			warmCell{name: fmt.Sprintf("4 × %s, 64 clients, %s", fmtBytes(float64(b.o.warmBigSize)), path), conns: 64, veth: veth, paths: big},
			warmCell{name: "8 × 4 KiB, 64 clients, " + path, small: true, conns: 64, veth: veth, paths: small},
			warmCell{name: fmt.Sprintf("4 × %s, 16 clients, TLS, %s", fmtBytes(float64(b.o.warmBigSize)), path), conns: 16, veth: veth, tls: true, paths: big},
		)
	}
	if b.o.warmCells != "" {
		var keep []warmCell
		for _, c := range cells {
			if strings.Contains(c.name, b.o.warmCells) {
				keep = append(keep, c)
			}
		}
		cells = keep
	}
	if b.o.cpuprofile != "" {
		if err := os.MkdirAll(b.o.cpuprofile, 0o755); err != nil {
			return err
		}
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(benchUser+":"+benchPassword))
	load0, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b.md, "### Warm load: serving capacity against nginx (%v per run, %d repeats)\n\n", d, b.o.warmRepeats)
	fmt.Fprintf(&b.md, "Servers in a network namespace of their own; wrk (2 threads, its own process) in the same namespace (loopback) or in a second one across a veth pair. "+
		"Server CPU: user and system time of the server's processes (nginx: master and its 2 workers) during the run, from /proc. Throughput: bytes wrk read per second (1 MB = 10^6 bytes). "+
		"Ratios to nginx are taken per repeat, then the median. Load average at the start: %s.\n\n", strings.TrimSpace(string(load0)))
	for _, cell := range cells {
		rows := plain
		if cell.tls {
			rows = tlsRows
		}
		s := series{}
		for r := range b.o.warmRepeats {
			for _, sv := range rotateWarm(rows, r) {
				ns, base := np.srv, sv.url
				if cell.veth {
					ns = np.cli
					base = strings.SplitN(sv.url, "://", 2)[0] + "://" + np.srvIP + ":" + sv.port
				}
				logf("warm-load: %s, %s, repeat %d/%d", cell.name, sv.label, r+1, b.o.warmRepeats)
				var prof chan error
				if b.o.cpuprofile != "" && r == 0 && sv.proc != nil && sv.proc.kind == kindCache && !sv.base {
					// -cpuprofile with a pprof build (./bench/pprofbin): the
					// cache's profile during the first repeat of each cell.
					prof = make(chan error, 1)
					file := filepath.Join(b.o.cpuprofile, "warm-"+strings.NewReplacer(" ", "", "×", "x", ",", "-").Replace(cell.name)+".pprof")
					go func() { prof <- fetchProfileWith(ctx, hc, sv.proc, max(1, int(d.Seconds())-1), file) }()
				}
				h0, _ := readHostCPU()
				c0 := sv.cpu()
				res, err := wrkRun{ns: ns, base: base, paths: cell.paths, conns: cell.conns, d: d, auth: auth, scriptDir: b.work}.run(ctx)
				cpu := sv.cpu() - c0
				h1, _ := readHostCPU()
				if err != nil {
					return fmt.Errorf("warm-load %s, %s: %w", cell.name, sv.label, err)
				}
				if prof != nil {
					if err := <-prof; err != nil {
						return fmt.Errorf("warm-load profile: %w (build the binary from ./bench/pprofbin)", err)
					}
				}
				secs := res.duration.Seconds()
				s.add(sv.label+" MB/s", float64(res.bytes)/secs/1e6)
				s.add(sv.label+" req/s", float64(res.requests)/secs)
				s.add(sv.label+" cpu/MB", cpu.Seconds()*1e3/(float64(res.bytes)/1e6))
				s.add(sv.label+" cpu/req", cpu.Seconds()*1e6/float64(res.requests))
				s.add(sv.label+" client cpu/MB", res.cpu.Seconds()*1e3/(float64(res.bytes)/1e6))
				s.add(sv.label+" host busy", h1.sub(h0).share())
			}
			n := rows[0].label
			for _, sv := range rows[1:] {
				for _, m := range []string{"MB/s", "req/s", "cpu/MB", "cpu/req"} {
					s.add(sv.label+" ratio "+m, s[sv.label+" "+m][r]/s[n+" "+m][r])
				}
			}
		}
		b.warmTable(cell, rows, s)
	}
	load1, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b.md, "Load average at the end of warm-load: %s.\n\n", strings.TrimSpace(string(load1)))
	return nil
}

// hcFor is hc, trusting the CA of f when there is one.
func hcFor(hc *http.Client, f *tlsFiles) *http.Client {
	if f == nil {
		return hc
	}
	t := hc.Transport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: f.pool}
	return &http.Client{Transport: t}
}

// cachesFirst is rows with the caches first, in order.
func cachesFirst(rows []warmServer) []warmServer {
	var caches, others []warmServer
	for _, s := range rows {
		if s.proc != nil && s.proc.kind == kindCache {
			caches = append(caches, s)
		} else {
			others = append(others, s)
		}
	}
	return append(caches, others...)
}

func rotateWarm(ts []warmServer, r int) []warmServer {
	r %= len(ts)
	return append(append([]warmServer{}, ts[r:]...), ts[:r]...)
}

func (b *bench) warmTable(cell warmCell, rows []warmServer, s series) {
	t := &table{head: []string{"server", "throughput", "requests/s", "× nginx", "server CPU per MB", "server CPU per request", "CPU × nginx", "wrk CPU per MB", "machine busy"},
		align: []string{"l", "r", "r", "r", "r", "r", "r", "r", "r"}}
	rate := "MB/s"
	if cell.small {
		rate = "req/s"
	}
	cpuKey := "cpu/MB"
	if cell.small {
		cpuKey = "cpu/req"
	}
	for i, sv := range rows {
		x, cx := "1 (itself)", "1 (itself)"
		if i > 0 {
			x = fmtRatio(s.med(sv.label + " ratio " + rate))
			cx = fmtRatio(s.med(sv.label + " ratio " + cpuKey))
		}
		t.row(sv.label, fmtMBps(s.med(sv.label+" MB/s")), fmtRate(s.med(sv.label+" req/s")), x,
			fmtMS(s.med(sv.label+" cpu/MB")), fmtUS(s.med(sv.label+" cpu/req")), cx, fmtMS(s.med(sv.label+" client cpu/MB")),
			fmt.Sprintf("%.0f%%", 100*s.med(sv.label+" host busy")))
	}
	fmt.Fprintf(&b.md, "#### %s\n\n%s\n", cell.name, t)
	cache := rows[len(rows)-1]
	for _, sv := range rows {
		if sv.label == "content-cache" {
			cache = sv
		}
	}
	thr, cpu := s.med(cache.label+" ratio "+rate), s.med(cache.label+" ratio "+cpuKey)
	switch {
	case cell.tls:
		b.addGoal("warm load, "+cell.name+": content-cache's throughput / nginx's", fmtRatio(thr), spread(s[cache.label+" ratio "+rate], fmtRatio), "≥ 0.9×", thr >= 0.9, !math.IsNaN(thr))
	case cell.small:
		b.addGoal("warm load, "+cell.name+": content-cache's CPU per request / nginx's", fmtRatio(cpu), spread(s[cache.label+" ratio "+cpuKey], fmtRatio), "≤ 2×", cpu <= 2, !math.IsNaN(cpu))
		b.addGoal("warm load, "+cell.name+": content-cache's requests/s / nginx's", fmtRatio(thr), spread(s[cache.label+" ratio "+rate], fmtRatio), "≥ 0.5×", thr >= 0.5, !math.IsNaN(thr))
	default:
		b.addGoal("warm load, "+cell.name+": content-cache's CPU per MB / nginx's", fmtRatio(cpu), spread(s[cache.label+" ratio "+cpuKey], fmtRatio), "≤ 1.5×", cpu <= 1.5, !math.IsNaN(cpu))
		b.addGoal("warm load, "+cell.name+": content-cache's throughput / nginx's", fmtRatio(thr), spread(s[cache.label+" ratio "+rate], fmtRatio), "≥ 0.9×", thr >= 0.9, !math.IsNaN(thr))
	}
	for _, sv := range rows {
		if sv.base {
			b.abTable("warm load, "+cell.name, s, []abMetric{
				{"throughput", "content-cache MB/s", sv.label + " MB/s", fmtMBps, true},
				{"requests/s", "content-cache req/s", sv.label + " req/s", fmtRate, true},
				{"server CPU per MB", "content-cache cpu/MB", sv.label + " cpu/MB", fmtMS, false},
				{"server CPU per request", "content-cache cpu/req", sv.label + " cpu/req", fmtUS, false},
			})
		}
	}
}

func fmtUS(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	return fmt.Sprintf("%.0f µs", v)
}

// nginxProc is nginx serving the origin's blob files.
type nginxProc struct {
	cmd           *exec.Cmd
	port, tlsPort string
}

// cpu is the CPU time of nginx's master and workers.
func (n *nginxProc) cpu() time.Duration { return treeCPU(n.cmd.Process.Pid) }

// nginxConfig serves /v2/NAME/blobs/sha256:HEX from the blob files of a
// distribution filesystem storage at root, plain and over TLS, with
// sendfile, two workers (the machine's CPUs) and no access log. TLS 1.3
// with AES-128-GCM, which Go's server picks too, and the same certificate
// as the caches.
func nginxConfig(dir, root, port, tlsPort string, tf *tlsFiles) string {
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  default_type application/octet-stream;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 0.0.0.0:%[3]s;
    listen 0.0.0.0:%[4]s ssl;
    ssl_certificate %[5]s;
    ssl_certificate_key %[6]s;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    location ~ "^/v2/.+/blobs/sha256:(([0-9a-f]{2})[0-9a-f]{62})$" {
      alias %[2]s/docker/registry/v2/blobs/sha256/$2/$1/data;
    }
  }
}
`, dir, root, port, tlsPort, tf.cert, tf.key)
}

func startNginx(ctx context.Context, hc *http.Client, work, ns, root string, tf *tlsFiles) (*nginxProc, error) {
	dir := filepath.Join(work, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n := &nginxProc{port: portOf(freeAddr()), tlsPort: portOf(freeAddr())}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConfig(dir, root, n.port, n.tlsPort, tf)), 0o644); err != nil {
		return nil, err
	}
	n.cmd = exec.Command("ip", "netns", "exec", ns, "nginx", "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := os.Create(filepath.Join(dir, "output.log"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	n.cmd.Stdout, n.cmd.Stderr = out, out
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := hc.Get("http://127.0.0.1:" + n.port + "/")
		if err == nil {
			resp.Body.Close()
			return n, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx did not come up: %v: %s", err, lastLines(string(log), 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// treeCPU is the CPU time of pid and of its children (nginx's workers),
// found by their parent in /proc/PID/stat.
func treeCPU(pid int) time.Duration {
	total, _ := cpuTime(pid)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		s := string(st)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			c, _ := cpuTime(child)
			total += c
		}
	}
	return total
}
