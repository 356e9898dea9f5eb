// Command demo shows content-cache at work on loopback, both ways: it starts
// an origin registry (the content-cache binary with htpasswd auth and the
// contentcaches middleware, the demo user assigned to the cache) and a
// cache, pushes small multi-layer images to the origin with a real client
// (oras-go), then pulls one through the cache's address twice, and another
// from the origin's own address twice (the origin redirects each layer to
// the cache with a signed URL). It shows from the cache's log lines that
// the first pull of each missed and the second hit, and prints the blob
// bytes served by the origin and by the cache. It stops everything it
// started.
//
//	go run ./cmd/demo -bin bin/content-cache
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

const (
	user     = "demo"
	password = "demo-password"
	repo     = "demo/app"
)

func main() {
	bin := flag.String("bin", "bin/content-cache", "the content-cache binary")
	layers := flag.Int("layers", 3, "layers in the demo image")
	flag.Parse()
	if err := run(*bin, *layers); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(bin string, layers int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "content-cache-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	originAddr, cacheAddr := freeAddr(), freeAddr()
	signingKey := filepath.Join(dir, "origin-ed25519.pem")
	if err := writeSigningKey(signingKey); err != nil {
		return err
	}
	// Clients and the cache reach the origin through a counting proxy, so
	// that the demo can say how many blob bytes the origin served.
	originCount := &byteCounter{}
	originFront, stopFront, err := startCountingProxy(originAddr, originCount)
	if err != nil {
		return err
	}
	defer stopFront()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		return err
	}
	originCfg := fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: %s}}
http: {addr: %s}
auth: {htpasswd: {realm: demo-origin, path: %s}}
middleware:
  registry:
    - name: contentcaches
      options:
        signingkey: %s
        probeinterval: 1s
        caches: [{name: demo-cache, host: "http://%s"}]
        users: {%s: demo-cache}
`, filepath.Join(dir, "origin"), originAddr, htpasswd, signingKey, cacheAddr, user)
	cacheCfg := fmt.Sprintf(`version: 0.1
log: {level: info, formatter: json, accesslog: {disabled: true}}
storage:
  delete: {enabled: true}
  filesystem: {rootdirectory: %s}
http: {addr: %s}
middleware:
  registry:
    - name: downstream
      options:
        blobttl: 24h
        upstreams:
          - http://%s
        signing:
          name: demo-cache
          keysurl: http://%s/api/v0/content_caches/keys
`, filepath.Join(dir, "cache"), cacheAddr, originFront, originFront)

	fmt.Printf("== starting the origin on %s (htpasswd auth, transparent caches; clients use %s, a byte-counting proxy) and the cache on %s\n", originAddr, originFront, cacheAddr)
	origin, err := start(ctx, bin, dir, "origin", originCfg, nil)
	if err != nil {
		return err
	}
	defer origin.stop()
	results := &resultLog{}
	cache, err := start(ctx, bin, dir, "cache", cacheCfg, results)
	if err != nil {
		return err
	}
	defer cache.stop()
	for _, addr := range []string{originAddr, cacheAddr} {
		if err := waitReady(ctx, "http://"+addr+"/v2/"); err != nil {
			return err
		}
	}

	origin1, err := repository(originFront, user, password)
	if err != nil {
		return err
	}
	fmt.Printf("== pushing %s/%s:v1 and :v2 (%d layers each) to the origin\n", originFront, repo, layers)
	root, err := pushImage(ctx, origin1, layers, "v1")
	if err != nil {
		return fmt.Errorf("push to origin: %w", err)
	}
	root2, err := pushImage(ctx, origin1, layers, "v2")
	if err != nil {
		return fmt.Errorf("push to origin: %w", err)
	}

	anonymous, err := repository(cacheAddr, "", "")
	if err != nil {
		return err
	}
	if _, err := anonymous.Resolve(ctx, "v1"); err == nil {
		return errors.New("the cache served an anonymous pull the origin would refuse")
	}
	fmt.Println("== an anonymous pull through the cache is refused, as the origin refuses it")

	// The origin redirects only to a cache that answered its last probe.
	if err := waitHealthy(ctx, "http://"+originFront+"/api/v0/content_caches/demo-cache", user, password); err != nil {
		return err
	}
	ways := []struct {
		title, addr, tag string
		root             ocispec.Descriptor
	}{
		{"way 1: pulling " + repo + ":v1 through the cache's address " + cacheAddr, cacheAddr, "v1", root},
		{"way 2: pulling " + repo + ":v2 from the origin's address " + originFront + " (layers redirected to the cache)", originFront, "v2", root2},
	}
	for _, way := range ways {
		fmt.Println("== " + way.title)
		for round, label := range []string{"first pull (cold cache)", "second pull (warm cache)"} {
			results.reset()
			before := originCount.snapshot()
			from, err := repository(way.addr, user, password)
			if err != nil {
				return err
			}
			got, err := oras.Copy(ctx, from, way.tag, memory.New(), way.tag, oras.DefaultCopyOptions)
			if err != nil {
				return fmt.Errorf("%s: %w", label, err)
			}
			if got.Digest != way.root.Digest {
				return fmt.Errorf("%s: digest %s, the origin's is %s", label, got.Digest, way.root.Digest)
			}
			counts, cacheBytes := results.waitBlobs(ctx, layers+1)
			origin := originCount.snapshot().minus(before)
			fmt.Printf("   %s: digest %s\n     cache blob requests: %v\n", label, got.Digest, counts)
			fmt.Printf("     blob bytes served: by the cache %d; by the origin %d to clients, %d to the cache\n", cacheBytes, origin.direct, origin.toCache)
			want := "miss"
			if round == 1 {
				want = "hit"
			}
			if counts[want] != layers+1 {
				return fmt.Errorf("%s: expected %d blob %ss, saw %v", label, layers+1, want, counts)
			}
			if origin.direct != 0 {
				return fmt.Errorf("%s: the origin served %d blob bytes to the client; expected every blob byte from the cache", label, origin.direct)
			}
		}
	}
	fmt.Println("== done: each first pull filled the cache from the origin, each second was served from the cache; no blob byte reached the client from the origin")
	return nil
}

// repository is an oras-go client for demo/app at addr, over plain HTTP.
func repository(addr, username, pass string) (*remote.Repository, error) {
	r, err := remote.NewRepository(addr + "/" + repo)
	if err != nil {
		return nil, err
	}
	r.PlainHTTP = true
	client := &auth.Client{Cache: auth.NewCache()}
	if username != "" {
		client.Credential = auth.StaticCredential(addr, auth.Credential{Username: username, Password: pass})
	}
	r.Client = client
	return r, nil
}

// pushImage pushes an OCI image of random layers and tags it v1.
func pushImage(ctx context.Context, r *remote.Repository, layers int, tag string) (ocispec.Descriptor, error) {
	push := func(mediaType string, data []byte) (ocispec.Descriptor, error) {
		desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
		return desc, r.Push(ctx, desc, bytes.NewReader(data))
	}
	// The tag in the config keeps each image's config blob its own.
	config, err := push(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","config":{"Labels":{"tag":"`+tag+`"}},"rootfs":{"type":"layers","diff_ids":[]}}`))
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	manifest := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: config}
	for range layers {
		data := make([]byte, 512<<10)
		_, _ = rand.Read(data)
		layer, err := push(ocispec.MediaTypeImageLayer, data)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		manifest.Layers = append(manifest.Layers, layer)
	}
	body, err := json.Marshal(manifest)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	root, err := push(ocispec.MediaTypeImageManifest, body)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return root, r.Tag(ctx, root, tag)
}

type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(ctx context.Context, bin, dir, label, config string, results *resultLog) (*process, error) {
	path := filepath.Join(dir, label+".yml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "serve", path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w (run `make build` first)", bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if results != nil {
				results.line(sc.Text())
			}
		}
		_ = cmd.Wait()
	}()
	return p, nil
}

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// resultLog counts the results of blob requests from the cache's log.
type resultLog struct {
	mu      sync.Mutex
	counts  map[string]int
	bytes   int64 // body bytes of those requests
	changed chan struct{}
}

func (r *resultLog) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts = map[string]int{}
	r.bytes = 0
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
}

func (r *resultLog) line(s string) {
	if !strings.Contains(s, `"kind":"blob"`) || !strings.Contains(s, `"method":"GET"`) {
		return
	}
	i := strings.Index(s, `"result":"`)
	if i < 0 {
		return
	}
	rest := s[i+len(`"result":"`):]
	result := rest[:strings.IndexByte(rest, '"')]
	var fields struct {
		Bytes int64 `json:"bytes"`
	}
	_ = json.Unmarshal([]byte(s), &fields)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[result]++
	r.bytes += fields.Bytes
	if r.changed != nil {
		close(r.changed)
	}
	r.changed = make(chan struct{})
}

// waitBlobs waits until n blob results were logged, or a few seconds, and
// returns them and their body bytes.
func (r *resultLog) waitBlobs(ctx context.Context, n int) (map[string]int, int64) {
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		total := 0
		for _, c := range r.counts {
			total += c
		}
		snapshot := map[string]int{}
		for k, v := range r.counts {
			snapshot[k] = v
		}
		ch, bytes := r.changed, r.bytes
		r.mu.Unlock()
		if total >= n {
			return snapshot, bytes
		}
		select {
		case <-ch:
		case <-deadline:
			return snapshot, bytes
		case <-ctx.Done():
			return snapshot, bytes
		}
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(ctx context.Context, url string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not come up: %w", url, err)
		case <-tick.C:
		}
	}
}
