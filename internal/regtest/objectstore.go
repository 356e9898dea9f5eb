package regtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"

	_ "github.com/distribution/distribution/v3/registry/storage/driver/azure"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/gcs"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// Storage is a storage back end a test runs caches on: distribution's
// driver name and parameters and, for an object store, the API server the
// test started and the requests it received.
type Storage struct {
	Driver string
	Params configuration.Parameters
	// Shared: caches started with these parameters see the same content
	// (every driver but inmemory, whose content lives in one instance).
	Shared bool
	// Server is the object store's API server; nil for filesystem and
	// inmemory.
	Server *ObjectStore
	// Redirect leaves distribution's storage.redirect on: hits answer 307
	// to a URL of the object store. Off by default here.
	Redirect bool
}

// Filesystem is the filesystem driver over a temporary directory.
func Filesystem(t testing.TB) Storage {
	return Storage{Driver: "filesystem", Params: configuration.Parameters{"rootdirectory": t.TempDir()}, Shared: true}
}

// Inmemory is the inmemory driver: every cache gets storage of its own.
func Inmemory() Storage {
	return Storage{Driver: "inmemory", Params: configuration.Parameters{}}
}

// Config is the storage section of a registry configuration on s, with
// deletes enabled (blobttl needs them), the upload purger off and
// redirects as s.Redirect says.
func (s Storage) Config() configuration.Storage {
	return configuration.Storage{
		s.Driver:      maps.Clone(s.Params),
		"delete":      configuration.Parameters{"enabled": true},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		"redirect":    configuration.Parameters{"disable": !s.Redirect},
	}
}

// NewDriver is a driver instance of its own on s: what the test sees of
// the storage, next to the caches' instances.
func (s Storage) NewDriver(t testing.TB) storagedriver.StorageDriver {
	t.Helper()
	d, err := factory.Create(t.Context(), s.Driver, maps.Clone(s.Params))
	if err != nil {
		t.Fatalf("storage driver %s: %v", s.Driver, err)
	}
	return d
}

// ObjectStore is an object store's API server a test started, behind a
// proxy that counts the requests it receives.
type ObjectStore struct {
	URL      string // the proxy, which drivers and redirected clients use
	Dir      string // where the server keeps its data
	Requests *OpCounter
	Log      *Buffer // the server's output
	CA       *CA     // the server and the proxy speak HTTPS with its certificates; nil: HTTP
}

// Client is an HTTP client for the object store's URLs (redirects to it
// included): it trusts o.CA.
func (o *ObjectStore) Client() *http.Client {
	if o.CA != nil {
		return o.CA.Client()
	}
	return &http.Client{Transport: &http.Transport{}}
}

// OpCounter counts an object store's requests by operation ("GET object",
// "LIST", ...).
type OpCounter struct {
	mu sync.Mutex
	m  map[string]int
	op func(*http.Request) string
}

// Snapshot returns a copy of the counts.
func (c *OpCounter) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// Since returns the counts added since before (a Snapshot), without zeros.
func (c *OpCounter) Since(before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range c.Snapshot() {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// Format prints counts as "op=n, ..." in a stable order.
func Format(counts map[string]int) string {
	keys := slices.Sorted(maps.Keys(counts))
	parts := make([]string, 0, len(keys))
	total := 0
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, counts[k]))
		total += counts[k]
	}
	return fmt.Sprintf("%d requests (%s)", total, strings.Join(parts, ", "))
}

// Total is the sum of counts.
func Total(counts map[string]int) int {
	n := 0
	for _, v := range counts {
		n += v
	}
	return n
}

func (c *OpCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := c.op(r)
		c.mu.Lock()
		c.m[op]++
		c.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// Tool finds a test tool: on PATH, or where `make tools` and .ci/run put
// it under the repository's .tools (rel, e.g. "bin/versitygw"). Without
// it the test is skipped, or fails when CI is set.
func Tool(t testing.TB, name, rel string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if root, ok := moduleRoot(); ok {
		p := filepath.Join(root, ".tools", rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found on PATH or in .tools/%s; run `make tools` (or .ci/run)", name, rel)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// moduleRoot is the directory of the nearest go.mod above the working
// directory.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// startServer runs an object store's server process until the test ends,
// waits until addr accepts connections, and puts the counting proxy in
// front of it.
func startServer(t testing.TB, name, addr string, ca *CA, op func(*http.Request) string, env []string, bin string, args ...string) *ObjectStore {
	t.Helper()
	o := &ObjectStore{Log: &Buffer{}, Requests: &OpCounter{m: map[string]int{}, op: op}, CA: ca}
	// The proxy's address first: a server may need to know the address
	// its clients use ("{proxy}" in args).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{proxy}", l.Addr().String())
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	// Its own process group, killed whole: npm's azurite starts node.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		l.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("%s output:\n%s", name, o.Log.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("%s exited before listening on %s: %v\n%s", name, addr, err, o.Log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within 60s\n%s", name, addr, o.Log.String())
		}
	}
	scheme := "http"
	if ca != nil {
		scheme = "https"
	}
	target, _ := url.Parse(scheme + "://" + addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = o.Client().Transport
	// The Host header stays the proxy's: request signatures cover it.
	if ca != nil {
		l = tls.NewListener(l, ca.ServerTLS(t))
	}
	srv := &http.Server{Handler: o.Requests.wrap(proxy), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Log(err)
		}
		_ = srv.Close()
	})
	o.URL = scheme + "://" + l.Addr().String()
	return o
}

func splitHostPort(t testing.TB, addr string) (host, port string) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return host, port
}
