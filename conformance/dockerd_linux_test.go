package conformance

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// dockerdStart bounds a private dockerd's start (until `docker version`
// answers) and dockerdStop its shutdown after SIGTERM.
const (
	dockerdStart = 60 * time.Second
	dockerdStop  = 20 * time.Second
)

// dockerEngine is a private Docker engine started by startDockerd.
type dockerEngine struct {
	host string // the DOCKER_HOST of its API: unix://DIR/docker.sock
	log  *regtest.Buffer
}

// startDockerd runs a private dockerd until the test ends: its own data
// root, exec root, API socket, pidfile, daemon.json and trust key under one
// temp dir, vfs storage, no bridge and no iptables, and the loopback range
// as insecure registries, so it pulls over plain HTTP from 127.0.0.1:PORT.
// It returns once `docker version` answers on its socket. On cleanup it
// stops dockerd (SIGTERM, then SIGKILL of its process group), makes sure
// the containerd it started is gone too, and unmounts what it left mounted
// under the temp dir. dockerd needs root; it is skipped (or fails, with CI
// set) without root or without dockerd, containerd and docker on PATH.
func startDockerd(t *testing.T) *dockerEngine {
	t.Helper()
	return startDockerdMirrors(t)
}

// startDockerdMirrors is startDockerd with registry-mirrors in its
// daemon.json: the mirrors Docker asks for Docker Hub's images.
func startDockerdMirrors(t *testing.T, mirrors ...string) *dockerEngine {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("dockerd needs root, running as uid %d (CI is set, so not skipping)", os.Geteuid())
		}
		t.Skipf("dockerd needs root, running as uid %d", os.Geteuid())
	}
	// dockerd starts its own containerd from PATH.
	for _, name := range []string{"dockerd", "containerd", "docker"} {
		if _, err := exec.LookPath(name); err != nil {
			const hint = "install the Debian package docker.io (.ci/run does); dockerd is in /usr/sbin"
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not found on PATH (CI is set, so not skipping); %s: %v", name, hint, err)
			}
			t.Skipf("%s not found on PATH; %s: %v", name, hint, err)
		}
	}
	bin, _ := exec.LookPath("dockerd")
	cli := newTool(t, "docker")

	// Unix socket paths are limited to 108 bytes and t.TempDir() can be
	// longer; containerd's sockets go under the exec root.
	dir, err := os.MkdirTemp("", "cc-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove dockerd dir: %v", err)
		}
	})
	// The trust key goes to /etc/docker/key.json unless the daemon.json says
	// otherwise (dockerd 20.10 has no flag for it).
	cfg := filepath.Join(dir, "daemon.json")
	daemonCfg := map[string]any{"deprecated-key-path": filepath.Join(dir, "key.json")}
	if len(mirrors) > 0 {
		daemonCfg["registry-mirrors"] = mirrors
	}
	daemonJSON, err := json.Marshal(daemonCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, daemonJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "docker.sock")
	execRoot := filepath.Join(dir, "exec")
	e := &dockerEngine{host: "unix://" + sock, log: &regtest.Buffer{}}
	cmd := exec.Command(bin,
		"--config-file", cfg, // not the host's /etc/docker/daemon.json
		"--data-root", filepath.Join(dir, "root"),
		"--exec-root", execRoot,
		"--host", e.host,
		"--pidfile", filepath.Join(dir, "dockerd.pid"),
		"--storage-driver", "vfs",
		"--iptables=false", "--ip6tables=false", "--bridge=none",
		"--insecure-registry", "127.0.0.0/8",
	)
	// No proxy, no DOCKER_* settings of the host: registry traffic stays on
	// loopback and the engine is configured by its flags alone.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return strings.HasPrefix(k, "DOCKER_") || strings.HasSuffix(strings.ToLower(k), "_proxy")
	})
	cmd.Stdout, cmd.Stderr = e.log, e.log
	// Pdeathsig: a test binary killed outright takes its dockerd with it,
	// and dockerd's own Pdeathsig takes its containerd.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		stopped := time.Now()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(dockerdStop):
			t.Errorf("dockerd did not stop within %v of SIGTERM: killing it", dockerdStop)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		killContainerd(t, filepath.Join(execRoot, "containerd", "containerd.pid"), dir)
		t.Logf("dockerd stopped in %v", time.Since(stopped).Round(time.Millisecond))
		if t.Failed() {
			t.Logf("dockerd log:\n%s", e.log.String())
		}
	})

	ctx, cancel := context.WithTimeout(t.Context(), dockerdStart)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		version := exec.CommandContext(ctx, cli.path, "--host", e.host, "version", "--format", "{{.Server.Version}}")
		version.Env = cli.env
		if out, err := version.Output(); err == nil {
			t.Logf("dockerd %s answered on %s after %v", strings.TrimSpace(string(out)), sock, time.Since(start).Round(time.Millisecond))
			return e
		}
		select {
		case err := <-done:
			done <- err // for the cleanup
			t.Fatalf("dockerd exited: %v\n%s", err, e.log.String())
		case <-ctx.Done():
			t.Fatalf("dockerd did not answer on %s within %v\n%s", sock, dockerdStart, e.log.String())
		case <-tick.C:
		}
	}
}

// killContainerd kills the containerd whose pid is in pidfile if it still
// runs with a command line naming dir (a pid reused since is left alone),
// and waits for it to go.
func killContainerd(t *testing.T, pidfile, dir string) {
	t.Helper()
	raw, err := os.ReadFile(pidfile)
	if err != nil {
		return // removed by dockerd on a clean stop, or never started
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return
	}
	ours := func() bool {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		return err == nil && strings.Contains(string(cmdline), dir)
	}
	if !ours() {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	deadline := time.Now().Add(dockerdStop)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ours() {
		if time.Now().After(deadline) {
			t.Errorf("dockerd's containerd (pid %d) still runs %v after SIGKILL", pid, dockerdStop)
			return
		}
		<-tick.C
	}
}

// unmountUnder detaches every mount at or below dir, deepest first: dockerd
// bind-mounts its data root onto itself and leaves that behind when killed.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("list mounts: %v", err)
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT ...; octal escapes in paths.
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		p := unescapeMountinfo(fields[4])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			points = append(points, p)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("unmount %s: %v", p, err)
		}
	}
}

func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
