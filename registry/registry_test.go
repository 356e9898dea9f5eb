package registry_test

// These tests run the content-cache binary the way users do: built once in
// TestMain, started as a subprocess with the sample configurations of
// configs/ (rewritten to loopback ports, temporary directories and
// generated certificates) and with bad configurations.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"go.yaml.in/yaml/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/content-cache/content-cache/internal/regtest"
)

const testVersion = "v0.0.0-registry-test"

// binary is the content-cache binary TestMain builds.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "content-cache-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "content-cache")
	// go test puts its own go first in PATH.
	build := exec.Command("go", "build", "-o", binary,
		"-ldflags", "-X github.com/content-cache/content-cache/registry.Version="+testVersion,
		"github.com/content-cache/content-cache/cmd/content-cache")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building content-cache: %v\n", err)
		return 1
	}
	// The replicas regtest.StartCluster starts run the same binary.
	if err := os.Setenv("CONTENT_CACHE_BINARY", binary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// configsDir is the repository's configs/ seen from this package.
const configsDir = "../configs"

// The sample configurations that must exist and start.
var runnableConfigs = []string{"cache-tls.yml", "cache.yml", "chain-dtr.yml", "chain-urls.yml", "origin.yml"}

// ---------------------------------------------------------------------------
// Processes

// childEnv is the environment for the binary: ours, without REGISTRY_*
// variables (they override the configuration), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout regtest.Buffer
	stderr regtest.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before done closes
}

// start runs the binary with args and stops it when the test ends. Its
// output is shown if the test fails.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls base/v2/ until it answers over HTTP, the process exits or
// the deadline passes.
func waitReady(t *testing.T, p *proc, client *http.Client, base string) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			cancel()
			return
		}
		cancel()
		last = err
		select {
		case <-p.done:
			t.Fatalf("%s exited before answering: %v\nstderr:\n%s", p.name, p.err, p.stderr.String())
		case <-deadline.C:
			t.Fatalf("%s did not answer %s/v2/ within 30s: %v", p.name, base, last)
		case <-tick.C:
		}
	}
}

// runToExit runs the binary to its end and returns its exit code and output.
func runToExit(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("content-cache %s did not exit within 60s\nstderr:\n%s", strings.Join(args, " "), errOut.String())
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run content-cache: %v", err)
	}
	return code, out.String(), errOut.String()
}

// freeAddr is a loopback address nothing listens on (regtest.FreeAddr).
func freeAddr(t *testing.T) string { return regtest.FreeAddr(t) }

// ---------------------------------------------------------------------------
// Certificates and passwords

type pki struct {
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
}

// newPKI writes a CA and a server certificate for 127.0.0.1 and localhost
// signed by it.
func newPKI(t *testing.T) pki {
	t.Helper()
	ca := regtest.NewCA(t)
	p := pki{caFile: ca.File, pool: ca.Pool}
	p.certFile, p.keyFile = ca.ServerFiles(t)
	return p
}

const (
	testUser = "alice"
	testPass = "s3cret-password"
)

func writeHtpasswd(t *testing.T) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(testPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(testUser+":"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---------------------------------------------------------------------------
// Rewriting sample configurations

// fixture is what rewritten configurations point at.
type fixture struct {
	pki      pki
	htpasswd string
	origin   string          // URL of the running origin
	caches   []string        // URLs of running first-level caches
	s3       regtest.Storage // the S3 server of the last configuration with storage.s3
}

// instance is one running registry.
type instance struct {
	proc   *proc
	base   string // http(s)://127.0.0.1:port
	client *http.Client
}

func mapAt(m map[any]any, key string) (map[any]any, bool) {
	v, ok := m[key].(map[any]any)
	return v, ok
}

// rewrite turns a sample configuration into one that runs here: free
// loopback ports, a temporary root directory, generated TLS files, CA and
// htpasswd files, and the fixture's origin and caches as upstreams. It
// returns the path of the rewritten file and the instance's base URL.
func (f *fixture) rewrite(t *testing.T, src string) (path, base string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[any]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	addr := freeAddr(t)
	scheme := "http"
	httpSec, ok := mapAt(doc, "http")
	if !ok {
		httpSec = map[any]any{}
		doc["http"] = httpSec
	}
	httpSec["addr"] = addr
	if tlsSec, ok := mapAt(httpSec, "tls"); ok {
		scheme = "https"
		tlsSec["certificate"] = f.pki.certFile
		tlsSec["key"] = f.pki.keyFile
		delete(tlsSec, "clientcas")
	}
	base = scheme + "://" + addr
	if _, ok := httpSec["host"]; ok {
		httpSec["host"] = base
	}
	if debug, ok := mapAt(httpSec, "debug"); ok {
		debug["addr"] = freeAddr(t)
	}
	if storage, ok := mapAt(doc, "storage"); ok {
		if fs, ok := mapAt(storage, "filesystem"); ok {
			fs["rootdirectory"] = t.TempDir()
		}
		if s3, ok := mapAt(storage, "s3"); ok {
			// A versitygw of the test's own (skipped without it, unless CI).
			f.s3 = regtest.StartS3(t)
			for k, v := range f.s3.Params {
				s3[k] = v
			}
		}
	}
	if auth, ok := mapAt(doc, "auth"); ok {
		if hp, ok := mapAt(auth, "htpasswd"); ok {
			hp["path"] = f.htpasswd
		}
	}
	if mw, ok := mapAt(doc, "middleware"); ok {
		regs, _ := mw["registry"].([]any)
		for _, r := range regs {
			entry, _ := r.(map[any]any)
			if entry["name"] != "downstream" {
				continue
			}
			opts, ok := mapAt(entry, "options")
			if !ok {
				t.Fatalf("%s: downstream without options", src)
			}
			f.rewriteUpstreams(t, src, opts)
			if sg, ok := mapAt(opts, "signing"); ok && sg["keysurl"] != nil {
				// Loopback only: the sample's origin is a plain one, whose
				// 404 the cache logs and survives.
				sg["keysurl"] = f.origin + "/api/v0/content_caches/keys"
			}
			if rd, ok := mapAt(opts, "redis"); ok {
				// A redis-server of the test's own (skipped without it,
				// unless CI).
				rd["addr"] = regtest.StartRedis(t).Addr
				delete(rd, "passwordfile")
			}
			if cas, ok := opts["cas"].([]any); ok {
				for i := range cas {
					cas[i] = f.pki.caFile
				}
			}
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, base
}

// rewriteUpstreams points the origin at f.origin and every other upstream
// at one of f.caches, in order.
func (f *fixture) rewriteUpstreams(t *testing.T, src string, opts map[any]any) {
	t.Helper()
	list, ok := opts["upstreams"].([]any)
	if !ok || len(list) == 0 {
		t.Fatalf("%s: upstreams is not a list", src)
	}
	cache := func(i int) string {
		if i >= len(f.caches) {
			t.Fatalf("%s lists %d upstream caches; the test runs %d", src, i+1, len(f.caches))
		}
		return f.caches[i]
	}
	if f.origin == "" {
		t.Fatalf("%s: no origin running", src)
	}
	if obj, ok := list[0].(map[any]any); ok {
		obj["originhost"] = f.origin
		if hosts, ok := obj["upstreamhosts"].([]any); ok {
			for i := range hosts {
				hosts[i] = cache(i)
			}
		}
		return
	}
	for i := range list {
		if i == len(list)-1 {
			list[i] = f.origin
		} else {
			list[i] = cache(i)
		}
	}
}

// startConfig rewrites and starts a sample configuration and waits until
// it answers.
func (f *fixture) startConfig(t *testing.T, src string) instance {
	t.Helper()
	return f.startConfigEnv(t, src, childEnv())
}

// answer is what a registry said to GET /v2/.
type answer struct {
	status    int
	challenge string
	body      string
}

func (in instance) ping(t *testing.T, user, pass string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, in.base+"/v2/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := in.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s/v2/: %v", in.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s/v2/: reading the body: %v", in.base, err)
	}
	return answer{resp.StatusCode, resp.Header.Get("WWW-Authenticate"), strings.TrimSpace(string(body))}
}

// ---------------------------------------------------------------------------
// Tests

func TestVersion(t *testing.T) {
	for _, flag := range []string{"--version", "-v"} {
		code, stdout, stderr := runToExit(t, childEnv(), flag)
		if code != 0 || stderr != "" {
			t.Fatalf("%s: exit %d, stderr %q", flag, code, stderr)
		}
		if !strings.HasPrefix(stdout, "content-cache ") {
			t.Fatalf("%s printed %q, want a line starting with %q", flag, stdout, "content-cache ")
		}
		want := "content-cache " + testVersion + " (distribution v3."
		if !strings.HasPrefix(stdout, want) || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("%s printed %q, want one line starting with %q", flag, stdout, want)
		}
	}
}

// TestSampleConfigs starts every registry configuration in configs/ and
// checks that GET /v2/ answers: the origin's own answer from the plain
// origin, and the very same answer through each cache.
func TestSampleConfigs(t *testing.T) {
	entries, err := os.ReadDir(configsDir)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !(strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".yaml")) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(configsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, ok := doc["storage"]; ok { // a registry configuration
			found = append(found, name)
		}
	}
	sort.Strings(found)
	for _, want := range runnableConfigs {
		if i := sort.SearchStrings(found, want); i == len(found) || found[i] != want {
			t.Errorf("configs/%s is missing (found %q)", want, found)
		}
	}

	f := &fixture{pki: newPKI(t), htpasswd: writeHtpasswd(t)}
	origin := f.startConfig(t, filepath.Join(configsDir, "origin.yml"))
	f.origin = origin.base

	// What the origin answers: a challenge without or with wrong
	// credentials, {} with good ones.
	type who struct{ name, user, pass string }
	clients := []who{{"anonymous", "", ""}, {"wrong password", testUser, "wrong"}, {"good credentials", testUser, testPass}}
	want := map[string]answer{}
	for _, c := range clients {
		want[c.name] = origin.ping(t, c.user, c.pass)
	}
	if a := want["anonymous"]; a.status != http.StatusUnauthorized || !strings.HasPrefix(a.challenge, "Basic ") {
		t.Fatalf("origin without credentials answered %+v, want 401 with a Basic challenge", a)
	}
	if a := want["good credentials"]; a.status != http.StatusOK || a.body != "{}" {
		t.Fatalf("origin with credentials answered %+v, want 200 {}", a)
	}

	// First-level cache for the chains, behind a proxy that counts the
	// requests reaching it.
	first := f.startConfig(t, filepath.Join(configsDir, "cache.yml"))
	firstURL, err := url.Parse(first.base)
	if err != nil {
		t.Fatal(err)
	}
	var viaFirst atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(firstURL)
	counter := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		viaFirst.Add(1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(counter.Close)
	f.caches = []string{counter.URL}

	for _, name := range found {
		// origin-transparent.yml is an origin too, run by
		// TestOriginTransparentConfig (it needs a signing key).
		if name == "origin.yml" || name == "origin-transparent.yml" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			before := viaFirst.Load()
			in := f.startConfig(t, filepath.Join(configsDir, name))
			for _, c := range clients {
				if got := in.ping(t, c.user, c.pass); got != want[c.name] {
					t.Errorf("%s: GET /v2/ through %s answered\n %+v\nthe origin answered\n %+v", c.name, name, got, want[c.name])
				}
			}
			through := viaFirst.Load() - before
			// The DTR form asks its upstream caches before the origin; the
			// URL-list form goes round-robin across the cache and the origin.
			least := int64(len(clients))
			if name == "chain-urls.yml" {
				least = 1
			}
			if chained := strings.HasPrefix(name, "chain-"); chained && through < least {
				t.Errorf("%s: %d requests went through the first-level cache, want at least %d", name, through, least)
			} else if !chained && through != 0 {
				t.Errorf("%s: %d requests went through the first-level cache, want none", name, through)
			}
		})
	}
}

// TestSampleConfigsFollowSeeds checks the samples, unmodified, against the
// deployments of the MSR/DTR documentation they follow.
func TestSampleConfigsFollowSeeds(t *testing.T) {
	parse := func(t *testing.T, name string) *configuration.Configuration {
		t.Helper()
		fh, err := os.Open(filepath.Join(configsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		config, err := configuration.Parse(fh)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return config
	}
	downstreamOptions := func(t *testing.T, c *configuration.Configuration) map[string]any {
		t.Helper()
		for _, mw := range c.Middleware["registry"] {
			if mw.Name == "downstream" {
				return mw.Options
			}
		}
		t.Fatal("no downstream middleware")
		return nil
	}
	for _, tc := range []struct {
		name, addr, blobttl, cas string
		tls                      bool
		upstreams                string
	}{
		{name: "cache.yml", addr: ":5000", blobttl: "24h", cas: "[/certs/origin-ca.pem]",
			upstreams: "[map[originhost:https://registry.example.com]]"},
		{name: "cache-tls.yml", addr: ":443", blobttl: "24h", cas: "[/run/secrets/msr.cert.pem]", tls: true,
			upstreams: "[https://msr.example.com:443]"},
		{name: "chain-urls.yml", addr: ":5000", blobttl: "24h", cas: "[/certs/cache-us-ca.pem /certs/origin-ca.pem]",
			upstreams: "[https://cache-us.example.com:443 https://registry.example.com]"},
		{name: "chain-dtr.yml", addr: ":5000", blobttl: "24h", cas: "[/certs/cache-us-ca.pem /certs/origin-ca.pem]",
			upstreams: "[map[originhost:https://registry.example.com upstreamhosts:[https://cache-us.example.com:443]]]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := parse(t, tc.name)
			if c.HTTP.Addr != tc.addr {
				t.Errorf("http.addr %q, want %q", c.HTTP.Addr, tc.addr)
			}
			if c.Storage.Type() != "filesystem" || c.Storage.Parameters()["rootdirectory"] != "/var/lib/registry" {
				t.Errorf("storage %v, want filesystem in /var/lib/registry", c.Storage)
			}
			if c.Storage["delete"]["enabled"] != true {
				t.Errorf("storage.delete.enabled is not true")
			}
			if tc.tls && (c.HTTP.TLS.Certificate != "/run/secrets/cache.cert.pem" || c.HTTP.TLS.Key != "/run/secrets/cache.key.pem") {
				t.Errorf("http.tls %+v, want the cache.cert.pem and cache.key.pem secrets", c.HTTP.TLS)
			}
			opts := downstreamOptions(t, c)
			if got := fmt.Sprint(opts["blobttl"]); got != tc.blobttl {
				t.Errorf("blobttl %s, want %s", got, tc.blobttl)
			}
			if got := fmt.Sprint(opts["cas"]); got != tc.cas {
				t.Errorf("cas %s, want %s", got, tc.cas)
			}
			if got := fmt.Sprint(opts["upstreams"]); got != tc.upstreams {
				t.Errorf("upstreams %s, want %s", got, tc.upstreams)
			}
		})
	}
	t.Run("origin.yml", func(t *testing.T) {
		c := parse(t, "origin.yml")
		if len(c.Middleware["registry"]) != 0 {
			t.Errorf("the origin configures registry middleware: %v", c.Middleware)
		}
		if c.Auth.Type() != "htpasswd" {
			t.Errorf("auth %v, want htpasswd", c.Auth)
		}
	})
}

// TestDockerStack checks the swarm stack against seeds 001/002.
func TestDockerStack(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(configsDir, "docker-stack.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var stack struct {
		Version  string
		Services map[string]struct {
			Image      string
			Entrypoint []string
			Ports      []string
			Deploy     struct {
				Replicas  int
				Placement struct{ Constraints []string }
				Restart   struct{ Condition string } `yaml:"restart_policy"`
			}
			Configs []struct{ Source, Target string }
			Secrets []string
		}
		Configs map[string]struct{ File string }
		Secrets map[string]struct{ File string }
	}
	if err := yaml.UnmarshalStrict(data, &stack); err != nil {
		// Strict: a misspelt key would be silently ignored by the test
		// otherwise. Unknown keys must be added to the struct above.
		t.Fatalf("docker-stack.yml: %v", err)
	}
	cache, ok := stack.Services["cache"]
	if !ok {
		t.Fatalf("no cache service: %+v", stack)
	}
	if !strings.HasPrefix(cache.Image, "content-cache") {
		t.Errorf("image %q, want content-cache", cache.Image)
	}
	if got := strings.Join(cache.Entrypoint, " "); got != "content-cache serve /config.yml" {
		t.Errorf("entrypoint %q, want content-cache serve /config.yml", got)
	}
	if len(cache.Configs) != 1 || cache.Configs[0].Source != "config.yml" || cache.Configs[0].Target != "/config.yml" {
		t.Errorf("configs %+v, want config.yml at /config.yml", cache.Configs)
	}
	sort.Strings(cache.Secrets)
	if got := strings.Join(cache.Secrets, " "); got != "cache.cert.pem cache.key.pem msr.cert.pem" {
		t.Errorf("secrets %q", got)
	}
	for _, s := range cache.Secrets {
		if _, ok := stack.Secrets[s]; !ok {
			t.Errorf("secret %s is not defined", s)
		}
	}
	if cache.Deploy.Replicas != 1 || len(cache.Deploy.Placement.Constraints) != 1 || cache.Deploy.Restart.Condition != "on-failure" {
		t.Errorf("deploy %+v, want one replica on a labelled node, restarted on failure", cache.Deploy)
	}
	if stack.Configs["config.yml"].File != "./config.yml" {
		t.Errorf("config.yml file %q", stack.Configs["config.yml"].File)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	configured, actual := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "config.yml")
	doc := "version: 0.1\nlog:\n  level: error\nstorage:\n  inmemory: {}\nhttp:\n  addr: " + configured + "\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()

	t.Run("REGISTRY_HTTP_ADDR", func(t *testing.T) {
		p := start(t, "env", childEnv("REGISTRY_HTTP_ADDR="+actual), "serve", path)
		waitReady(t, p, client, "http://"+actual)
		if conn, err := net.DialTimeout("tcp", configured, time.Second); err == nil {
			conn.Close()
			t.Fatalf("the configured address %s answers although REGISTRY_HTTP_ADDR=%s", configured, actual)
		}
		p.stop()
	})
	t.Run("REGISTRY_CONFIGURATION_PATH", func(t *testing.T) {
		p := start(t, "env", childEnv("REGISTRY_CONFIGURATION_PATH="+path), "serve")
		waitReady(t, p, client, "http://"+configured)
	})
}

// badConfig is a valid cache configuration with one change.
func badConfig(t *testing.T, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	doc := `version: 0.1
log:
  level: info
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: ` + filepath.Join(dir, "root") + `
http:
  addr: ` + freeAddr(t) + `
middleware:
  registry:
    - name: downstream
      options:
        blobttl: 24h
        upstreams:
          - originhost: http://127.0.0.1:1
`
	if edit != nil {
		doc = edit(doc)
	}
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func replace(old, new string) func(string) string {
	return func(doc string) string {
		if !strings.Contains(doc, old) {
			panic("badConfig: " + old + " not in the document")
		}
		return strings.Replace(doc, old, new, 1)
	}
}

// TestBaseConfigStarts shows that badConfig's starting point is good (so
// each bad configuration fails for its own reason) and that the cache starts
// while its upstream is unreachable.
func TestBaseConfigStarts(t *testing.T) {
	path := badConfig(t, nil)
	c, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ HTTP struct{ Addr string } }
	if err := yaml.Unmarshal(c, &doc); err != nil {
		t.Fatal(err)
	}
	p := start(t, "base", childEnv(), "serve", path)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	waitReady(t, p, client, "http://"+doc.HTTP.Addr)
}

func TestBadConfigurations(t *testing.T) {
	pemDir := t.TempDir()
	noCert := filepath.Join(pemDir, "empty.pem")
	if err := os.WriteFile(noCert, []byte("no certificate here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A CA file the process cannot read: a directory when the tests run as
	// root (root reads any file), a file without permissions otherwise.
	unreadable, unreadableWhy := pemDir, "is a directory"
	if os.Geteuid() != 0 {
		unreadable, unreadableWhy = filepath.Join(pemDir, "locked.pem"), "permission denied"
		if err := os.WriteFile(unreadable, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(t.TempDir(), "missing.yml")
	cas := func(path string) func(string) string {
		return replace("        upstreams:", "        cas: ["+path+"]\n        upstreams:")
	}

	cases := []struct {
		name string
		args func(t *testing.T) []string
		// want is the whole stderr line; CONFIG stands for the file's path.
		want string
	}{
		{"unknown option", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("blobttl: 24h", "blobttl: 24h\n        bogus: 1"))}
		}, `content-cache: configuration error in CONFIG: downstream: unknown option "bogus"; valid options are advertise, anonymous, authttl, backoff, blobttl, cas, clientheadertimeout, clientidletimeout, dialtimeout, filltimeout, headertimeout, idletimeout, lowwatermark, maxsize, offlinegrace, pin, prefetch, redis, registries, signing, upstreams, warm`},
		{"bad blobttl", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("blobttl: 24h", "blobttl: 1d"))}
		}, `content-cache: configuration error in CONFIG: downstream: option "blobttl": found string "1d", expected a positive duration such as 24h (units ns, us, ms, s, m, h; a bare integer means nanoseconds)`},
		{"maxsize with a unit typo", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("blobttl: 24h", "blobttl: 24h\n        maxsize: 500GBi"))}
		}, `content-cache: configuration error in CONFIG: downstream: option "maxsize": found string "500GBi", expected a size in bytes such as 500GiB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; a bare integer counts bytes) greater than 0`},
		{"warm with inline credentials", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("blobttl: 24h", "blobttl: 24h\n        warm:\n          images: [base/app:1.4]\n          credentials: {username: alice, password: hunter2}"))}
		}, `content-cache: configuration error in CONFIG: downstream: option "warm.credentials": found a mapping, expected the path of a Docker config file (config.json); credentials are never inline`},
		{"warm interval too short", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("blobttl: 24h", "blobttl: 24h\n        warm:\n          images: [base/app:1.4]\n          interval: 30s"))}
		}, `content-cache: configuration error in CONFIG: downstream: option "warm.interval": found string "30s", expected a duration of at least 1m such as 6h (units s, m, h)`},
		{"blobttl without delete", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("  delete:\n    enabled: true\n", ""))}
		}, `content-cache: configuration error in CONFIG: downstream: option "blobttl" (24h) needs storage.delete.enabled: true to expire content, but it is not set; expected storage.delete.enabled: true or no blobttl`},
		{"bad upstream URL", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("originhost: http://127.0.0.1:1", "originhost: registry.example.com"))}
		}, `content-cache: configuration error in CONFIG: downstream: option "upstreams.originhost": "registry.example.com" is not an upstream URL; expected http:// or https:// followed by host[:port]`},
		{"upstream URL with credentials", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("originhost: http://127.0.0.1:1", "originhost: https://bob:hunter2@registry.example.com"))}
		}, `content-cache: configuration error in CONFIG: downstream: option "upstreams.originhost": "https://bob:xxxxx@registry.example.com" has user information; expected only scheme://host[:port] (each client's own credentials are forwarded)`},
		{"unreadable cas", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, cas(unreadable))}
		}, `content-cache: configuration error in CONFIG: downstream: option "cas": cannot read "` + unreadable + `": ` + unreadableWhy + `; expected a readable PEM CA certificate`},
		{"cas without a certificate", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, cas(noCert))}
		}, `content-cache: configuration error in CONFIG: downstream: option "cas": "` + noCert + `" holds no PEM certificate; expected at least one -----BEGIN CERTIFICATE----- block`},
		{"proxy and downstream", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, func(doc string) string { return doc + "proxy:\n  remoteurl: https://registry-1.docker.io\n" })}
		}, `content-cache: configuration error in CONFIG: downstream: proxy.remoteurl (https://registry-1.docker.io) is set; expected either the downstream middleware or distribution's proxy, not both`},
		{"unknown storage driver", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("  filesystem:", "  nosuchdriver:"))}
		}, "content-cache: startup failed: StorageDriver not registered: nosuchdriver"},
		{"malformed YAML", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("middleware:", "middleware: [\n"))}
		}, "content-cache: configuration error in CONFIG: yaml: line 13: did not find expected node content"},
		{"not a registry configuration", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, func(string) string { return "just: text\n" })}
		}, `content-cache: configuration error in CONFIG: unsupported version: ""; expected version: 0.1`},
		{"TLS certificate missing", func(t *testing.T) []string {
			return []string{"serve", badConfig(t, replace("http:\n", "http:\n  tls:\n    certificate: /nonexistent/cache.cert.pem\n    key: /nonexistent/cache.key.pem\n"))}
		}, `content-cache: configuration error in CONFIG: http.tls: certificate "/nonexistent/cache.cert.pem" and key "/nonexistent/cache.key.pem": open /nonexistent/cache.cert.pem: no such file or directory; expected a readable PEM certificate and its unencrypted key`},
		{"missing file", func(t *testing.T) []string {
			return []string{"serve", missing}
		}, "content-cache: configuration error: open " + missing + ": no such file or directory"},
		{"no file given", func(t *testing.T) []string {
			return []string{"serve"}
		}, "content-cache: configuration error: no configuration file given; expected content-cache serve CONFIG"},
		{"unknown command", func(t *testing.T) []string {
			return []string{"bogus"}
		}, `content-cache: unknown command "bogus" for "content-cache"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args(t)
			code, stdout, stderr := runToExit(t, childEnv(), args...)
			if code == 0 {
				t.Fatalf("exit code 0 for %q\nstdout:\n%s\nstderr:\n%s", args, stdout, stderr)
			}
			if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
				t.Fatalf("stack trace on stderr:\n%s", stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
				t.Fatalf("stderr is not exactly one line:\n%s", stderr)
			}
			want := tc.want
			if len(args) > 1 {
				want = strings.ReplaceAll(want, "CONFIG", args[1])
			}
			if got := strings.TrimSuffix(stderr, "\n"); got != want {
				t.Fatalf("stderr\n got %s\nwant %s", got, want)
			}
		})
	}
}
