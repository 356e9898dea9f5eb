package main

import (
	"context"
	"fmt"
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
	"time"
)

// -storage s3: the two caches keep their content in versitygw (posix back
// end under the working directory), each in a bucket of its own, behind a
// proxy that counts the requests per bucket. The origin stays on the
// filesystem. Redirects are off: the caches serve hits themselves, as a
// cache near users with its bucket elsewhere should.

const (
	s3AccessKey = "bench"
	s3SecretKey = "bench-secret"
)

// objectStore is versitygw and its counting proxy.
type objectStore struct {
	endpoint string // the proxy: what the registries use
	// direct is versitygw itself, for scenarios that count nothing: the
	// proxy copies every byte in the harness's process, whose CPU shares
	// the machine with what is measured.
	direct string
	cmd    *exec.Cmd
	srv    *http.Server

	mu     sync.Mutex
	counts map[string]int // requests per bucket
}

// startObjectStore starts versitygw over dir with one bucket per name.
func startObjectStore(ctx context.Context, bin, dir string, buckets []string) (*objectStore, error) {
	data := filepath.Join(dir, "s3")
	for _, b := range buckets {
		// With the posix back end a bucket is a directory.
		if err := os.MkdirAll(filepath.Join(data, b), 0o755); err != nil {
			return nil, err
		}
	}
	addr := freeAddr()
	s := &objectStore{counts: map[string]int{}}
	s.cmd = exec.Command(bin, "--port", addr, "posix", data)
	s.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s3AccessKey, "ROOT_SECRET_KEY="+s3SecretKey)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w (make tools installs versitygw)", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("versitygw exited at startup: %v", err)
		case <-ctx.Done():
			_ = s.cmd.Process.Kill()
			return nil, fmt.Errorf("versitygw did not listen on %s: %v", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.direct = "http://" + addr
	target, _ := url.Parse(s.direct)
	rp := httputil.NewSingleHostReverseProxy(target)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = s.cmd.Process.Kill()
		return nil, err
	}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bucket, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		s.mu.Lock()
		s.counts[bucket]++
		s.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = s.srv.Serve(l) }()
	s.endpoint = "http://" + l.Addr().String()
	return s, nil
}

func (s *objectStore) count(bucket string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[bucket]
}

// quiet waits until bucket has had no request for a second (a cache
// commits a fill after its client got the last byte), and returns the
// count.
func (s *objectStore) quiet(ctx context.Context, bucket string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last, since := s.count(bucket), time.Now()
	for time.Since(since) < time.Second {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("bucket %s still busy after 60s", bucket)
		case <-tick.C:
		}
		if n := s.count(bucket); n != last {
			last, since = n, time.Now()
		}
	}
	return last, nil
}

func (s *objectStore) close() {
	if s == nil {
		return
	}
	_ = s.srv.Close()
	_ = s.cmd.Process.Kill()
}

// storageYAML is a registry's storage driver section: its own directory,
// or its own bucket of the object store.
func (b *bench) storageYAML(name, root string) string {
	if b.store == nil || name == "origin" {
		return fmt.Sprintf("  filesystem: {rootdirectory: %s}\n", root)
	}
	return fmt.Sprintf(`  s3:
    region: us-east-1
    regionendpoint: %s
    bucket: %s
    forcepathstyle: true
    secure: false
    accesskey: %s
    secretkey: %s
  redirect: {disable: true}
`, b.store.endpoint, bucketOf(name), s3AccessKey, s3SecretKey)
}

// bucketOf is the bucket of a registry process.
func bucketOf(name string) string { return name }

// storageScenario (-storage s3): cold and warm throughput of each cache on
// the object store, and the object store's requests per pull.
func (b *bench) storageScenario(ctx context.Context) error {
	if b.store == nil {
		return nil
	}
	n := int64(b.o.blobSize)
	caches := slices.DeleteFunc(slices.Clone(b.direct), func(t target) bool { return !t.cache })
	s := series{}
	for r := range b.o.repeats {
		path, err := b.pushBlob(ctx, "bench/s3", n)
		if err != nil {
			return err
		}
		logf("storage s3, blob %s, repeat %d/%d", fmtBytes(float64(n)), r+1, b.o.repeats)
		for _, t := range rotate(caches, r) {
			bucket := bucketOf(t.p.name)
			before, err := b.store.quiet(ctx, bucket)
			if err != nil {
				return err
			}
			b.settle(ctx)
			tm, err := get(ctx, b.hc, t.url()+path, nil, n)
			if err != nil {
				return err
			}
			after, err := b.store.quiet(ctx, bucket)
			if err != nil {
				return err
			}
			s.add(t.label+" cold MB/s", tm.mbps())
			s.add(t.label+" cold requests", float64(after-before))
			var warm []float64
			for range warmGets {
				tm, err := get(ctx, b.hc, t.url()+path, nil, n)
				if err != nil {
					return err
				}
				warm = append(warm, tm.mbps())
			}
			done, err := b.store.quiet(ctx, bucket)
			if err != nil {
				return err
			}
			s.add(t.label+" warm MB/s", median(warm))
			s.add(t.label+" warm requests", float64(done-after)/warmGets)
		}
	}
	fmt.Fprintf(&b.md, "\n### Blob of %s on S3 (versitygw, posix back end, loopback), cold then warm\n\n", fmtBytes(float64(n)))
	fmt.Fprintf(&b.md, "Each cache has its own bucket; redirects off (the cache serves hits). Storage requests counted at a proxy in front of versitygw, per pull; the cold count includes the commit after the client's last byte. Medians of %d repeats, %d warm GETs each.\n\n", b.o.repeats, warmGets)
	fmt.Fprintf(&b.md, "| target | cold MB/s | warm MB/s | storage requests, cold pull | storage requests, warm pull |\n|---|--:|--:|--:|--:|\n")
	for _, t := range caches {
		fmt.Fprintf(&b.md, "| %s | %.0f | %.0f | %.0f | %.1f |\n", t.label,
			s.med(t.label+" cold MB/s"), s.med(t.label+" warm MB/s"),
			s.med(t.label+" cold requests"), s.med(t.label+" warm requests"))
	}
	return nil
}
