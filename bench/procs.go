package main

import (
	"bufio"
	"context"
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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"
)

// Credentials of the one user at the origin.
const (
	benchUser     = "bench"
	benchPassword = "bench-password"
)

// proc is one registry process: the content-cache binary serving a
// configuration.
type proc struct {
	name   string
	kind   string // kindOrigin, kindCache or kindProxy
	scheme string // http, or https with -tls
	addr   string // host:port of the registry
	debug  string // host:port of the debug server
	root   string // its storage
	cmd    *exec.Cmd
	done   chan struct{}

	log *reqLog // its request lines
	// drainOnly: its request lines are drained, not parsed (warm-load:
	// the harness parsing 10,000 JSON lines a second took CPU from the
	// servers, and only the servers that log paid for it).
	drainOnly atomic.Bool

	mu   sync.Mutex
	tail []string // last lines of its output, for errors
}

// URL is the registry's base URL.
func (p *proc) URL() string { return p.scheme + "://" + p.addr }

func (p *proc) pid() int { return p.cmd.Process.Pid }

// config kinds
const (
	kindOrigin = "origin"
	kindCache  = "cache"
	kindProxy  = "proxy"
)

// procSpec is what startProc needs to configure and start one process.
type procSpec struct {
	bin, dir, name, kind string
	htpasswd             string
	upstream             string // host:port of the origin (or the shaper), for the two caches
	storage              func(name, root string) string
	tls                  *tlsFiles // nil: plain HTTP
	// cacheOptions are more downstream options for a cache, as YAML lines
	// indented under options (e.g. "        redis: {addr: ...}\n").
	cacheOptions string
	// netns: run in this network namespace (ip netns exec), listening on
	// every address of it; hc must then dial into it (netNS.client).
	netns string
	// serveTLS: serve HTTPS with these files while reaching upstream over
	// plain HTTP (the warm-load scenario's TLS cache, whose origin is plain).
	serveTLS *tlsFiles
	root     string // its storage directory; default dir/name/storage
	// output: also write its output to this file (with -keep, to read
	// its request lines after the run).
	output string
}

func (s procSpec) scheme() string {
	if s.tls != nil || s.serveTLS != nil {
		return "https"
	}
	return "http"
}

// registryConfig is a configuration for one process of the given kind,
// with the storage driver section storage (storageYAML). upstream is the
// origin (or the shaper) for the two caches. With tls, the registry serves
// HTTPS with the harness's certificate, and the caches reach their
// upstream over HTTPS, trusting the harness's CA (content-cache with its
// cas option, distribution's proxy through SSL_CERT_FILE, set by
// startProc).
func registryConfig(kind, storage, addr, debug, htpasswd, upstream string, tls *tlsFiles, cacheOptions string) string {
	scheme := "http"
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
	if tls != nil {
		scheme = "https"
		fmt.Fprintf(&b, "  tls: {certificate: %s, key: %s}\n", tls.cert, tls.key)
	}
	switch kind {
	case kindOrigin:
		fmt.Fprintf(&b, "auth:\n  htpasswd: {realm: bench-origin, path: %s}\n", htpasswd)
	case kindCache:
		fmt.Fprintf(&b, `middleware:
  registry:
    - name: downstream
      options:
        upstreams: [%s://%s]
`, scheme, upstream)
		if tls != nil {
			fmt.Fprintf(&b, "        cas: [%s]\n", tls.ca)
		}
		b.WriteString(cacheOptions)
	case kindProxy:
		fmt.Fprintf(&b, "proxy: {remoteurl: %s://%s, username: %s, password: %s}\n", scheme, upstream, benchUser, benchPassword)
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

// startProc writes the configuration and starts `bin serve` on it; its
// request lines go to p.log. The process gets its own TMPDIR under dir
// (content-cache before issue #16 spooled fills there: an A/B base may).
func startProc(ctx context.Context, hc *http.Client, spec procSpec) (*proc, error) {
	dir, name, bin := spec.dir, spec.name, spec.bin
	p := &proc{name: name, kind: spec.kind, scheme: spec.scheme(), addr: freeAddr(), debug: freeAddr(), root: filepath.Join(dir, name, "storage"), done: make(chan struct{}), log: newReqLog()}
	if spec.root != "" {
		p.root = spec.root
	}
	tmp := filepath.Join(dir, name, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, name, "config.yml")
	listen := p.addr
	if spec.netns != "" {
		// A fresh namespace has every port free; its veth address too.
		listen = "0.0.0.0:" + portOf(p.addr)
	}
	cfg := registryConfig(spec.kind, spec.storage(name, p.root), listen, p.debug, spec.htpasswd, spec.upstream, spec.tls, spec.cacheOptions)
	if spec.serveTLS != nil {
		cfg = strings.Replace(cfg, "  debug:\n", fmt.Sprintf("  tls: {certificate: %s, key: %s}\n  debug:\n", spec.serveTLS.cert, spec.serveTLS.key), 1)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "serve", cfgPath)
	if spec.netns != "" {
		p.cmd = exec.Command("ip", "netns", "exec", spec.netns, bin, "serve", cfgPath)
	}
	p.cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	if spec.tls != nil {
		// distribution's proxy has no CA option: Go's roots on Linux
		// honour SSL_CERT_FILE.
		p.cmd.Env = append(p.cmd.Env, "SSL_CERT_FILE="+spec.tls.ca)
	}
	// Should the harness die without stopping it, the registry goes too.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var keep *os.File
	if spec.output != "" {
		if keep, err = os.Create(spec.output); err != nil {
			return nil, err
		}
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w (run `make build` first)", bin, err)
	}
	go func() {
		defer close(p.done)
		if keep != nil {
			defer keep.Close()
		}
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			at, line := time.Now(), sc.Text()
			if keep != nil {
				_, _ = keep.WriteString(line + "\n")
			}
			p.mu.Lock()
			p.tail = append(p.tail, line)
			if len(p.tail) > 20 {
				p.tail = p.tail[1:]
			}
			p.mu.Unlock()
			if !p.drainOnly.Load() {
				p.log.line(at, line)
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = p.cmd.Wait()
	}()
	if err := waitReady(ctx, hc, p); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitReady waits for any HTTP answer on /v2/ (a 401 too).
func waitReady(ctx context.Context, hc *http.Client, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		resp, err := hc.Get(p.URL() + "/v2/")
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

// portOf is the port of host:port.
func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// cpuTime is the CPU time (user and system, all threads, the exited ones
// included) pid has used: its process CPU clock (clock_gettime of
// CLOCK_PROCESS_CPUTIME_ID's per-process form, what clock_getcpuclockid(3)
// returns), to the nanosecond. /proc/PID/stat counts in clock ticks of
// 10 ms: ±10 ms on the 100 ms a cold 64 MiB blob costs, a tenth of the
// measure. /proc is the fallback where the clock cannot be read.
func cpuTime(pid int) (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(processCPUClock(pid), &ts); err == nil {
		return time.Duration(ts.Nano()), nil
	}
	u, s, err := cpuTimes(pid)
	return u + s, err
}

// processCPUClock is the clock id of pid's CPU time: the kernel's
// MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED), which glibc's
// clock_getcpuclockid also returns.
func processCPUClock(pid int) int32 {
	const cpuClockSched = 2
	return int32(^pid<<3 | cpuClockSched)
}

// cpuTimes is the user and the system CPU time pid has used.
func cpuTimes(pid int) (user, system time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	// utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime) * tick, time.Duration(stime) * tick, nil
}
