package registry_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// drainBlob is big enough that a client reading slowly holds a response
// in flight for as long as the test wants.
const drainBlob = 32 << 20

const sigterm = syscall.SIGTERM

// drainSetup is an origin holding one large blob, behind a link that
// holds every blob body after 1 MiB until released, and one replica of
// the binary with the drain settings of configure (nil: none).
func drainSetup(t *testing.T, configure func(map[string]any)) (*regtest.Cluster, *regtest.SlowLink, regtest.Image) {
	t.Helper()
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(2101, 1, drainBlob)
	if err := regtest.Push(t.Context(), origin.URL, "", "", img); err != nil {
		t.Fatal(err)
	}
	link := regtest.NewSlowLink(t, origin.URL, regtest.SlowLinkOptions{Rate: 1 << 30, HoldAt: 1 << 20})
	c := regtest.StartCluster(t, regtest.ClusterOptions{
		Replicas: 1, NoLB: true, Storage: regtest.Filesystem(t), Upstream: link.URL,
		Configure: func(_ int, config map[string]any) {
			if configure != nil {
				configure(config)
			}
		},
	})
	return c, link, img
}

// openBlob starts a GET of the image's layer and reads its first MiB.
func openBlob(t *testing.T, ctx context.Context, base string, img regtest.Image) (io.ReadCloser, digest.Verifier) {
	t.Helper()
	d := digest.FromBytes(img.Layers[0])
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+img.Repo+"/blobs/"+d.String(), nil)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET blob: %s", resp.Status)
	}
	v := d.Verifier()
	if _, err := io.CopyN(v, resp.Body, 1<<20); err != nil {
		t.Fatal(err)
	}
	return resp.Body, v
}

// waitClosed waits until addr refuses connections: the drain closed the
// listener.
func waitClosed(ctx context.Context, addr string) error {
	return regtest.Poll(ctx, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil
		}
		c.Close()
		return fmt.Errorf("%s still accepts connections", addr)
	})
}

// TestDrainOnSIGTERM: a replica that gets SIGTERM with no drain option set
// stops being ready while it still serves, stops accepting connections,
// lets the responses and the fill in flight finish, and exits 0. The
// client's download completes with a verified body, and the fill is
// committed: a new process serves the blob without asking the origin.
// Without the drain (distribution's draintimeout 0) the process ends at
// once and the body is cut.
func TestDrainOnSIGTERM(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for _, kind := range []string{"fill", "hit"} {
		t.Run(kind, func(t *testing.T) {
			c, link, img := drainSetup(t, nil)
			r := c.Replicas[0]
			if kind == "hit" {
				// Stored first: the response in flight is served from storage.
				link.Release()
				cl := &regtest.Client{Base: r.URL}
				if _, err := cl.Pull(ctx, img.Repo, img.Tag); err != nil {
					t.Fatal(err)
				}
			}
			body, v := openBlob(t, ctx, r.URL, img)
			defer body.Close()
			if kind == "fill" {
				// The fill is held at the link: it is in flight.
				if err := link.WaitHeld(ctx, 1); err != nil {
					t.Fatal(err)
				}
			}
			// Requests keep coming, back to back from three clients, as a
			// load balancer's last ones would: the listener stays open
			// while they do. They ask for a path distribution answers
			// 404 at once, so that a loaded machine leaves no gap.
			stopTraffic := make(chan struct{})
			var traffic sync.WaitGroup
			for range 3 {
				traffic.Go(func() {
					for {
						select {
						case <-stopTraffic:
							return
						default:
						}
						_, _ = get(ctx, r.URL+"/keep-draining-open")
					}
				})
			}
			if err := r.Proc.Signal(sigterm); err != nil {
				t.Fatal(err)
			}
			// Not ready, still serving: / answers 503 while /v2/ is
			// answered.
			err := regtest.Poll(ctx, func(ctx context.Context) error {
				if status, err := get(ctx, r.URL+"/"); err != nil || status != http.StatusServiceUnavailable {
					return fmt.Errorf("GET / while draining: %d %v, want 503", status, err)
				}
				return nil
			}, r.Proc)
			if err == nil {
				if status, gerr := get(ctx, r.URL+"/v2/"); gerr != nil || status != http.StatusOK {
					err = fmt.Errorf("GET /v2/ while draining: %d %v, want 200", status, gerr)
				}
			}
			close(stopTraffic)
			traffic.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if err := waitClosed(ctx, r.Addr); err != nil {
				t.Fatal(err)
			}
			if done, exit := r.Proc.Exited(); done {
				t.Fatalf("the replica exited (%v) with a response in flight", exit)
			}
			link.Release()
			n, err := io.Copy(v, body)
			if err != nil || 1<<20+n != drainBlob || !v.Verified() {
				t.Fatalf("download after SIGTERM: %d more bytes, %v, verified %v; want the whole blob", n, err, v.Verified())
			}
			if err := r.Proc.Wait(ctx); err != nil {
				t.Fatalf("exit after the drain: %v, want status 0\n%s", err, r.Proc.Out.String())
			}
			if _, err := r.Proc.Out.WaitFor(ctx, "msg=drained"); err != nil {
				t.Fatal(err)
			}
			if kind == "fill" {
				// The fill was committed before the exit: a new process
				// serves the blob from storage.
				r.Start()
				if err := r.WaitReady(ctx); err != nil {
					t.Fatal(err)
				}
				cl := &regtest.Client{Base: r.URL}
				if _, err := cl.PullBlob(ctx, img.Repo, digest.FromBytes(img.Layers[0])); err != nil {
					t.Fatal(err)
				}
				if got, err := r.Metric(ctx, "content_cache_requests_total", `kind="blob"`, `result="hit"`); err != nil || got != 1 {
					t.Errorf("blob hits after the restart: %v %v, want 1 (the drained fill committed)", got, err)
				}
			}
		})
	}
}

// TestDrainTimeout: http.draintimeout bounds the drain. A response still
// in flight when it ends is cut (never a complete-looking body), the fill
// is not committed, and the exit status says so.
func TestDrainTimeout(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	c, link, img := drainSetup(t, func(config map[string]any) {
		config["http"].(map[string]any)["draintimeout"] = "1s"
	})
	r := c.Replicas[0]
	body, v := openBlob(t, ctx, r.URL, img)
	defer body.Close()
	if err := link.WaitHeld(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.Proc.Signal(sigterm); err != nil {
		t.Fatal(err)
	}
	err := r.Proc.Wait(ctx)
	if err == nil {
		t.Fatal("the replica exited 0 with a response cut by the drain timeout")
	}
	if _, werr := r.Proc.Out.WaitFor(ctx, "drain: requests still in flight after 1s were cut"); werr != nil {
		t.Fatalf("exit %v without the drain timeout's message: %v", err, werr)
	}
	n, err := io.Copy(v, body)
	if err == nil || v.Verified() {
		t.Fatalf("the cut download ended with %v after %d more bytes (verified %v), want an error", err, n, v.Verified())
	}
	root := c.Storage.Params["rootdirectory"].(string)
	if _, err := os.Stat(blobData(root, digest.FromBytes(img.Layers[0]))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the cut fill's blob in storage: %v, want none", err)
	}
}

// get answers the status of GET url on a connection of its own.
func get(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// blobData is where the filesystem driver under root keeps the data of d.
func blobData(root string, d digest.Digest) string {
	return filepath.Join(root, "docker/registry/v2/blobs", d.Algorithm().String(), d.Encoded()[:2], d.Encoded(), "data")
}
