package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// writeSigningKey writes a fresh Ed25519 private key (PKCS#8 PEM), what
// `openssl genpkey -algorithm ed25519` writes: the origin's signingkey.
func writeSigningKey(path string) error {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// byteCounter adds up the blob bytes the origin answered: to clients
// directly, and to the cache (its requests carry a Via naming it).
type byteCounter struct {
	mu      sync.Mutex
	direct  int64
	toCache int64
}

type originBytes struct{ direct, toCache int64 }

func (c *byteCounter) snapshot() originBytes {
	c.mu.Lock()
	defer c.mu.Unlock()
	return originBytes{c.direct, c.toCache}
}

func (b originBytes) minus(o originBytes) originBytes {
	return originBytes{b.direct - o.direct, b.toCache - o.toCache}
}

// countingBody counts a response body as it is read.
type countingBody struct {
	io.ReadCloser
	c       *byteCounter
	toCache bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.mu.Lock()
	if b.toCache {
		b.c.toCache += int64(n)
	} else {
		b.c.direct += int64(n)
	}
	b.c.mu.Unlock()
	return n, err
}

// startCountingProxy serves a reverse proxy to target on a free loopback
// address, counting blob GET bodies; it returns the address and a stop.
func startCountingProxy(target string, c *byteCounter) (string, func(), error) {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") && resp.StatusCode/100 == 2 {
			resp.Body = &countingBody{ReadCloser: resp.Body, c: c, toCache: strings.Contains(strings.Join(req.Header.Values("Via"), ","), "content-cache-")}
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return l.Addr().String(), func() { _ = srv.Close() }, nil
}

// waitHealthy waits until the origin lists the cache as healthy (it
// answered the origin's last probe).
func waitHealthy(ctx context.Context, url, username, pass string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.SetBasicAuth(username, pass)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var c struct {
				Healthy bool `json:"healthy"`
			}
			err = json.NewDecoder(resp.Body).Decode(&c)
			resp.Body.Close()
			if err == nil && c.Healthy {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the origin never saw the cache healthy at %s: %w", url, ctx.Err())
		case <-tick.C:
		}
	}
}
