package regtest

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
)

// ClusterOptions describe replicas of the content-cache binary on one
// shared storage. Only Upstream and Storage are required.
type ClusterOptions struct {
	// Replicas is how many to start. Default: 3.
	Replicas int
	// Storage is what every replica stores to: an object store (StartS3)
	// or one shared directory (Filesystem). It must be Shared.
	Storage Storage
	// Upstream is the base URL of the upstream registry (required).
	Upstream string
	// Options are more downstream options, next to upstreams: "blobttl",
	// or "redis" ({"addr": redis.Addr}) once replicas coordinate.
	Options map[string]any
	// Secret is http.secret, the same on every replica, as distribution
	// requires behind a load balancer. Default: "regtest-cluster-secret".
	Secret string
	// Configure, when set, has the last word on replica i's configuration
	// (the YAML document as maps, before it is written).
	Configure func(i int, config map[string]any)
	// Env is added to every replica's environment.
	Env []string
	// NoLB leaves haproxy out: the test talks to the replicas directly.
	NoLB bool
	// LB shapes haproxy.
	LB LBOptions
}

// Cluster is replicas of the content-cache binary on one storage, with
// haproxy in front (unless NoLB).
type Cluster struct {
	Replicas []*Replica
	LB       *LoadBalancer // nil with NoLB
	Storage  Storage

	t testing.TB
}

// URL is where clients pull: haproxy's front end, or replica 0 with NoLB.
func (c *Cluster) URL() string {
	if c.LB != nil {
		return c.LB.URL
	}
	return c.Replicas[0].URL
}

// Replica is one content-cache process of a Cluster. Its addresses and
// configuration stay the same across restarts.
type Replica struct {
	Index     int
	Addr      string // 127.0.0.1:PORT, the registry
	URL       string // http://Addr
	DebugAddr string // distribution's debug server: /metrics, /debug/health
	Config    string // the configuration file's path
	// Proc is the running process, or the last one; Start replaces it.
	Proc *Process
	// Starts counts the processes started for this replica.
	Starts int

	t   testing.TB
	bin string
	env []string
}

// StartCluster builds the content-cache binary (once per test binary),
// starts the replicas, waits until each is ready, then starts haproxy in
// front and waits until haproxy sees every replica up.
func StartCluster(t testing.TB, o ClusterOptions) *Cluster {
	t.Helper()
	if o.Upstream == "" {
		t.Fatal("regtest: ClusterOptions.Upstream is empty")
	}
	if o.Storage.Driver == "" || !o.Storage.Shared {
		t.Fatalf("regtest: ClusterOptions.Storage (%q) must be storage the replicas share: Filesystem or an object store", o.Storage.Driver)
	}
	if o.Replicas <= 0 {
		o.Replicas = 3
	}
	if o.Secret == "" {
		o.Secret = "regtest-cluster-secret"
	}
	bin := ContentCacheBinary(t)
	c := &Cluster{Storage: o.Storage, t: t}
	dir := t.TempDir()
	var backends []string
	for i := range o.Replicas {
		r := &Replica{Index: i, Addr: FreeAddr(t), DebugAddr: FreeAddr(t), t: t, bin: bin, env: o.Env}
		r.URL = "http://" + r.Addr
		r.Config = filepath.Join(dir, fmt.Sprintf("replica%d.yml", i))
		opts := map[string]any{"upstreams": []any{o.Upstream}}
		maps.Copy(opts, o.Options)
		config := map[string]any{
			"version": "0.1",
			"log": map[string]any{
				"level":     "info",
				"formatter": "text",
				"accesslog": map[string]any{"disabled": true},
			},
			"storage": storageYAML(o.Storage),
			"http": map[string]any{
				"addr":   r.Addr,
				"secret": o.Secret,
				"debug": map[string]any{
					"addr":       r.DebugAddr,
					"prometheus": map[string]any{"enabled": true, "path": "/metrics"},
				},
			},
			"middleware": map[string]any{
				"registry": []any{map[string]any{"name": "downstream", "options": opts}},
			},
		}
		if o.Configure != nil {
			o.Configure(i, config)
		}
		out, err := yaml.Marshal(config)
		if err != nil {
			t.Fatalf("replica %d configuration: %v", i, err)
		}
		if err := os.WriteFile(r.Config, out, 0o600); err != nil {
			t.Fatal(err)
		}
		c.Replicas = append(c.Replicas, r)
		backends = append(backends, r.Addr)
	}
	// Started together: each loads its configuration and storage driver
	// at the same time as the others.
	for _, r := range c.Replicas {
		r.Start()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, r := range c.Replicas {
		if err := r.WaitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !o.NoLB {
		c.LB = StartHAProxy(t, backends, o.LB)
		if err := c.LB.WaitUp(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// storageYAML is s's storage section as plain maps.
func storageYAML(s Storage) map[string]any {
	out := map[string]any{}
	for k, v := range s.Config() {
		out[k] = map[string]any(v)
	}
	return out
}

// Start starts a new process of the replica (after Kill or Terminate, or
// the first time) and returns at once; see WaitReady.
func (r *Replica) Start() {
	r.t.Helper()
	if r.Proc != nil {
		if done, _ := r.Proc.Exited(); !done {
			r.t.Fatalf("replica %d: Start while pid %d runs", r.Index, r.Proc.PID())
		}
	}
	r.Starts++
	env := append([]string{"OTEL_TRACES_EXPORTER=none"}, r.env...)
	r.Proc = StartProcess(r.t, fmt.Sprintf("replica %d (start %d)", r.Index, r.Starts), env, r.bin, "serve", r.Config)
}

// WaitReady waits until the replica answers 200 on / (its readiness, what
// haproxy probes) and on /v2/ is served at all.
func (r *Replica) WaitReady(ctx context.Context) error {
	if err := WaitStatus(ctx, http.DefaultClient, r.URL+"/", http.StatusOK, r.Proc); err != nil {
		return fmt.Errorf("replica %d (pid %d) not ready: %w", r.Index, r.Proc.PID(), err)
	}
	return nil
}

// Restart is Terminate, Start and WaitReady: one step of a rolling
// restart. The exit status of the old process is returned (nil for 0).
func (r *Replica) Restart(ctx context.Context) error {
	exit := r.Proc.Terminate(ctx)
	if done, _ := r.Proc.Exited(); !done {
		return exit
	}
	r.Start()
	if err := r.WaitReady(ctx); err != nil {
		return err
	}
	return exit
}

// Kill SIGKILLs the replica and waits for it to be gone.
func (r *Replica) Kill() { r.Proc.Kill() }

// Stop freezes the replica (SIGSTOP).
func (r *Replica) Stop() error { return r.Proc.Stop() }

// Cont resumes it (SIGCONT).
func (r *Replica) Cont() error { return r.Proc.Cont() }

// Terminate sends SIGTERM and waits for the exit (the drain), or for ctx.
func (r *Replica) Terminate(ctx context.Context) error { return r.Proc.Terminate(ctx) }

// Metrics returns the replica's Prometheus metrics (text format) from its
// debug server.
func (r *Replica) Metrics(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.DebugAddr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("replica %d metrics: %s", r.Index, resp.Status)
	}
	return string(b), nil
}

// Metric returns the sum of the samples of the metric name whose labels
// include every one of labels (each as Prometheus prints it, e.g.
// `kind="blob"`); 0 when there is none.
func (r *Replica) Metric(ctx context.Context, name string, labels ...string) (float64, error) {
	text, err := r.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	return SumMetric(text, name, labels...)
}

// SumMetric sums, in Prometheus' text format, the samples of the metric
// name whose labels include every one of labels.
func SumMetric(text, name string, labels ...string) (float64, error) {
	sum := 0.0
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		series, value, ok := strings.Cut(rest, " ")
		if idx := strings.LastIndex(rest, "} "); idx >= 0 {
			series, value, ok = rest[:idx+1], rest[idx+2:], true
		}
		if !ok {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(series, l) {
				match = false
			}
		}
		if !match {
			continue
		}
		var v float64
		if _, err := fmt.Sscanf(value, "%g", &v); err != nil {
			return 0, fmt.Errorf("metric %s: %q: %w", name, line, err)
		}
		sum += v
	}
	return sum, nil
}

// builtBinary is the content-cache binary built for this test binary.
type builtBinary struct {
	once sync.Once
	path string
	err  error
}

// contentCache is the one build per test binary: a process-wide cache of
// a build product, like the go command's own.
var contentCache builtBinary

// ContentCacheBinary returns the path of the content-cache binary: the
// one CONTENT_CACHE_BINARY names, or one built from this checkout once per
// test binary (without the race detector: the replicas are the system
// under test, not the test). RemoveBuiltBinary deletes it.
func ContentCacheBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CONTENT_CACHE_BINARY"); p != "" {
		return p
	}
	contentCache.once.Do(func() {
		root, ok := moduleRoot()
		if !ok {
			contentCache.err = fmt.Errorf("no go.mod above the working directory")
			return
		}
		dir, err := os.MkdirTemp("", "regtest-content-cache-")
		if err != nil {
			contentCache.err = err
			return
		}
		path := filepath.Join(dir, "content-cache")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/content-cache")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			contentCache.err = fmt.Errorf("go build ./cmd/content-cache: %v\n%s", err, out)
			return
		}
		contentCache.path = path
	})
	if contentCache.err != nil {
		t.Fatal(contentCache.err)
	}
	return contentCache.path
}

// RemoveBuiltBinary deletes the binary ContentCacheBinary built, if any.
// Call it from TestMain after m.Run.
func RemoveBuiltBinary() {
	if contentCache.path != "" {
		_ = os.RemoveAll(filepath.Dir(contentCache.path))
	}
}
