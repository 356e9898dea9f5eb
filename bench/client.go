package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// newHTTPClient is the harness's client: keep-alive, no compression, as
// many connections per host as the scenarios open at once.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableCompression:  true,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     90 * time.Second,
		ReadBufferSize:      256 << 10,
		WriteBufferSize:     64 << 10,
	}}
}

// timing is one GET: time to the first body byte and to the last.
type timing struct {
	ttfb, total time.Duration
	bytes       int64
}

// mbps is the throughput of the whole request in MB/s (10^6 bytes).
func (t timing) mbps() float64 { return float64(t.bytes) / t.total.Seconds() / 1e6 }

var readBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// get GETs url with the bench credentials, reads the body to the end and
// checks the status and, when want >= 0, the length.
func get(ctx context.Context, c *http.Client, url string, hdr http.Header, want int64) (timing, error) {
	return getTo(ctx, c, url, hdr, want, nil)
}

// getTo is get that also writes the body to sink when it is not nil (a
// digest's verifier, a buffer).
func getTo(ctx context.Context, c *http.Client, url string, hdr http.Header, want int64, sink io.Writer) (timing, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return timing{}, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.SetBasicAuth(benchUser, benchPassword)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return timing{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return timing{}, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	var t timing
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 && t.bytes == 0 {
			t.ttfb = time.Since(start)
		}
		t.bytes += int64(n)
		if sink != nil && n > 0 {
			_, _ = sink.Write(buf[:n]) // hashes and buffers do not fail
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return timing{}, fmt.Errorf("GET %s: after %d bytes: %w", url, t.bytes, err)
		}
	}
	t.total = time.Since(start)
	if want >= 0 && t.bytes != want {
		return timing{}, fmt.Errorf("GET %s: %d bytes, want %d", url, t.bytes, want)
	}
	return t, nil
}

// getConcurrent starts n GETs of url at the same moment and returns each
// one's timing.
func getConcurrent(ctx context.Context, c *http.Client, url string, n int, want int64) ([]timing, error) {
	// Open the connections first, so that the GETs start together.
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = get(ctx, c, strings.SplitAfter(url, "/v2/")[0], nil, -1)
		}()
	}
	wg.Wait()
	out := make([]timing, n)
	errs := make([]error, n)
	startGate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGate
			out[i], errs[i] = get(ctx, c, url, nil, want)
		}()
	}
	close(startGate)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// requestRate sends GETs of url from workers goroutines for d and returns
// the completed requests per second and their number (a first GET, not
// counted, comes before).
func requestRate(ctx context.Context, c *http.Client, url string, workers int, d time.Duration) (float64, int64, error) {
	hdr := http.Header{"Accept": {manifestAccept}}
	if _, err := get(ctx, c, url, hdr, -1); err != nil {
		return 0, 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if _, err := get(ctx, c, url, hdr, -1); err != nil {
					firstErr.CompareAndSwap(nil, err)
					cancel()
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, 0, err
	}
	return float64(done.Load()) / elapsed.Seconds(), done.Load(), nil
}

// crane runs `crane pull --format oci` of ref into a fresh directory and
// returns the wall time of the pull (the directory is removed after).
// lastCPU is the user and system time crane used in its last pull (from
// wait4, microseconds).
type crane struct {
	bin       string
	dockerCfg string // DOCKER_CONFIG directory with the bench credentials
	work      string
	env       []string
	lastCPU   time.Duration
}

// newCrane writes the credentials of hosts for crane; with tls, crane
// trusts the harness's CA (SSL_CERT_FILE), and otherwise speaks plain HTTP
// to them (crane does for a loopback address).
func newCrane(bin, work string, hosts []string, tls *tlsFiles) (*crane, error) {
	cfg := filepath.Join(work, "docker-config")
	if err := os.MkdirAll(cfg, 0o700); err != nil {
		return nil, err
	}
	auths := map[string]any{}
	for _, h := range hosts {
		auths[h] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(benchUser + ":" + benchPassword))}
	}
	b, _ := json.Marshal(map[string]any{"auths": auths})
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), b, 0o600); err != nil {
		return nil, err
	}
	env := append(os.Environ(), "DOCKER_CONFIG="+cfg)
	if tls != nil {
		env = append(env, "SSL_CERT_FILE="+tls.ca)
	}
	return &crane{bin: bin, dockerCfg: cfg, work: work, env: env}, nil
}

func (c *crane) pull(ctx context.Context, ref string) (time.Duration, error) {
	dir, err := os.MkdirTemp(c.work, "pull-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, c.bin, "pull", "--format", "oci", ref, filepath.Join(dir, "oci"))
	cmd.Env = c.env
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("crane pull %s: %v: %s", ref, err, strings.TrimSpace(string(out)))
	}
	c.lastCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return elapsed, nil
}
