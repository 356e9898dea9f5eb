package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Credentials of the one user at the origin.
const (
	benchUser     = "bench"
	benchPassword = "bench-password"
)

// proc is one registry process: the content-cache binary serving a
// configuration.
type proc struct {
	name  string
	addr  string // host:port of the registry
	debug string // host:port of the debug server
	root  string // its storage
	cmd   *exec.Cmd
	done  chan struct{}

	mu   sync.Mutex
	tail []string // last lines of its output, for errors
}

// URL is the registry's base URL.
func (p *proc) URL() string { return "http://" + p.addr }

func (p *proc) pid() int { return p.cmd.Process.Pid }

// config kinds
const (
	kindOrigin = "origin"
	kindCache  = "cache"
	kindProxy  = "proxy"
)

// registryConfig is a configuration for one process of the given kind,
// with the storage driver section storage (storageYAML). upstream is the
// origin (or the shaper) for the two caches.
func registryConfig(kind, storage, addr, debug, htpasswd, upstream string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  formatter: json
  accesslog: {disabled: true}
storage:
  delete: {enabled: true}
%s  maintenance: {uploadpurging: {enabled: false}}
http:
  addr: %s
  secret: bench-secret
  debug:
    addr: %s
    prometheus: {enabled: true, path: /metrics}
`, storage, addr, debug)
	switch kind {
	case kindOrigin:
		fmt.Fprintf(&b, "auth:\n  htpasswd: {realm: bench-origin, path: %s}\n", htpasswd)
	case kindCache:
		fmt.Fprintf(&b, `middleware:
  registry:
    - name: downstream
      options:
        upstreams: [http://%s]
`, upstream)
	case kindProxy:
		fmt.Fprintf(&b, "proxy: {remoteurl: http://%s, username: %s, password: %s}\n", upstream, benchUser, benchPassword)
	}
	return b.String()
}

// writeHtpasswd writes the origin's user file with a bcrypt cost (the
// origin checks it on every request).
func writeHtpasswd(path string, cost int) error {
	h, err := bcrypt.GenerateFromPassword([]byte(benchPassword), cost)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(benchUser+":"+string(h)+"\n"), 0o600)
}

// startProc writes the configuration and starts `bin serve` on it; lines
// of its output go to onLine (may be nil). The process gets its own TMPDIR
// (the cache spools fills there) under dir.
func startProc(ctx context.Context, bin, dir, name, kind, htpasswd, upstream string, storage func(name, root string) string, onLine func(string)) (*proc, error) {
	p := &proc{name: name, addr: freeAddr(), debug: freeAddr(), root: filepath.Join(dir, name, "storage"), done: make(chan struct{})}
	tmp := filepath.Join(dir, name, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, name, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(registryConfig(kind, storage(name, p.root), p.addr, p.debug, htpasswd, upstream)), 0o600); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "serve", cfgPath)
	p.cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	// Should the harness die without stopping it, the registry goes too.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w (run `make build` first)", bin, err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 20 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
			if onLine != nil {
				onLine(line)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = p.cmd.Wait()
	}()
	if err := waitReady(ctx, p); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitReady waits for any HTTP answer on /v2/ (a 401 too).
func waitReady(ctx context.Context, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		resp, err := http.Get(p.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited at startup: %s", p.name, p.lastLines())
		case <-ctx.Done():
			return fmt.Errorf("%s did not come up on %s: %v; last output: %s", p.name, p.addr, err, p.lastLines())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (p *proc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// stop ends the process: SIGTERM, then SIGKILL after 5 seconds.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// procStatus reads a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// resetPeakRSS sets VmHWM back to the current RSS (Linux clear_refs 5).
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0o200)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// originLog counts what the origin served, from its "response completed"
// log lines (distribution logs one for every 2xx and 3xx answer, with the
// method, URI, status and body bytes written). That is what the caches
// fetched from it: no proxy in the data path is needed to count.
type originLog struct {
	mu      sync.Mutex
	entries []logEntry
	changed chan struct{}
}

type logEntry struct {
	method, uri string
	status      int
	written     int64
}

func newOriginLog() *originLog { return &originLog{changed: make(chan struct{})} }

func (o *originLog) line(s string) {
	if !strings.Contains(s, `"response completed"`) {
		return
	}
	var f struct {
		Method  string `json:"http.request.method"`
		URI     string `json:"http.request.uri"`
		Status  int    `json:"http.response.status"`
		Written int64  `json:"http.response.written"`
	}
	if json.Unmarshal([]byte(s), &f) != nil {
		return
	}
	o.mu.Lock()
	o.entries = append(o.entries, logEntry{f.Method, f.URI, f.Status, f.Written})
	close(o.changed)
	o.changed = make(chan struct{})
	o.mu.Unlock()
}

// mark is a position in the log.
func (o *originLog) mark() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

var syncSeq struct {
	sync.Mutex
	n int
}

// sync makes sure every request the origin finished before now is in the
// log: it sends a request of its own and waits for its line, which the
// origin writes after the others.
func (o *originLog) sync(ctx context.Context, origin *proc) error {
	syncSeq.Lock()
	syncSeq.n++
	uri := fmt.Sprintf("/v2/?bench-sync=%d", syncSeq.n)
	syncSeq.Unlock()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, origin.URL()+uri, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(benchUser, benchPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		o.mu.Lock()
		ch := o.changed
		for i := len(o.entries) - 1; i >= 0 && i >= len(o.entries)-1000; i-- {
			if o.entries[i].uri == uri {
				o.mu.Unlock()
				return nil
			}
		}
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("the origin's log line for %s did not come", uri)
		}
	}
}

// upstreamCount is what the origin served for blobs and manifests.
type upstreamCount struct {
	blobGets, blobHeads, manifestReqs int
	blobBytes                         int64
}

// since counts the origin's answers after mark (sync first).
func (o *originLog) since(mark int) upstreamCount {
	o.mu.Lock()
	defer o.mu.Unlock()
	var c upstreamCount
	for _, e := range o.entries[mark:] {
		switch {
		case strings.Contains(e.uri, "/blobs/sha256:"):
			if e.method == http.MethodGet {
				c.blobGets++
				c.blobBytes += e.written
			} else if e.method == http.MethodHead {
				c.blobHeads++
			}
		case strings.Contains(e.uri, "/manifests/"):
			c.manifestReqs++
		}
	}
	return c
}

// cpuTime is the CPU time (user and system, all threads) pid has used, from
// /proc/PID/stat, in clock ticks of 10 ms.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	// utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick, nil
}
