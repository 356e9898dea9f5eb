package downstream_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// windowLayer is far larger than a fill's window in memory (4 MiB; 1 MiB
// on the filesystem), so that a client joining halfway needs bytes the
// window no longer holds; under the 16 MiB that the gcs driver can store
// on fake-gcs-server.
const windowLayer = 12 << 20

// A client that joins a fill after the window moved on gets every byte:
// from the upload in progress on the filesystem, from storage once
// committed on the object stores. One upstream fetch in all.
func TestStorageLateJoinerBehindWindow(t *testing.T) {
	forEachStorage(t, func(t *testing.T, st regtest.Storage) {
		fake, srv := newFakeUpstream(t, "slow", windowLayer)
		extra := map[string]any{}
		logs := storageLogs(extra, downstream.Options{})
		cache := regtest.StartCacheOn(t, st, srv.URL, extra)
		client := &http.Client{Transport: &http.Transport{}}
		t.Cleanup(client.CloseIdleConnections)
		url := cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String()

		first, err := blobGETWith(t.Context(), client, url)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Body.Close()
		firstBody := make(chan error, 1)
		go func() {
			// On an object store this client too may fall behind the
			// window (a loaded machine) and wait for the commit.
			body, err := io.ReadAll(first.Body)
			if err == nil && !bytes.Equal(body, fake.blob) {
				err = fmt.Errorf("wrong body of %d bytes", len(body))
			}
			firstBody <- err
		}()
		// The upstream sends half the blob, then holds: once the cache
		// received that half, the fill is 6 MiB in.
		if err := cache.WaitUpstreamBytes(t.Context(), "blob", windowLayer/2); err != nil {
			t.Fatal(err)
		}

		late := []struct {
			rng  string
			want []byte
		}{
			{"", fake.blob},
			{"bytes=1000-", fake.blob[1000:]},
			{"bytes=100-2000000", fake.blob[100:2000001]},
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(late))
		for _, l := range late {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
				if l.rng != "" {
					req.Header.Set("Range", l.rng)
				}
				if err := getExpect(client, req, l.want); err != nil {
					errs <- errors.New("late client " + l.rng + ": " + err.Error())
				}
			}()
		}
		if err := cache.WaitInFlight(t.Context(), 1+len(late)); err != nil {
			t.Fatal(err)
		}
		fake.unblock()
		if err := <-firstBody; err != nil {
			t.Errorf("first client: %v", err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := fake.gets.Load(); got != 1 {
			t.Fatalf("%d upstream GETs, want 1", got)
		}
		fillsDone(t, cache)
		noStoreWarning(t, logs)
	})
}

// gatedDriver is the filesystem driver with one step held until its gate
// is closed: "commit", its moves into the blob store (a fill's commit),
// "write", its writes to uploads (an object store's writer uploading a
// part inside Write), or "link", its writes of repositories' blob links
// (a commit's last step, after the data is in place). name, when set, is
// the driver's name it reports. With "link", seen gets the path of each
// held link and of each blob data Stat, when it has room.
type gatedDriver struct {
	storagedriver.StorageDriver
	gate chan struct{}
	hold string
	name string
	seen chan string
}

func (d gatedDriver) PutContent(ctx context.Context, path string, content []byte) error {
	if d.hold == "link" && strings.Contains(path, "/_layers/") && strings.HasSuffix(path, "/link") {
		d.saw(path)
		select {
		case <-d.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return d.StorageDriver.PutContent(ctx, path, content)
}

func (d gatedDriver) Stat(ctx context.Context, path string) (storagedriver.FileInfo, error) {
	if d.hold == "link" && strings.Contains(path, "/blobs/") && strings.HasSuffix(path, "/data") {
		d.saw(path)
	}
	return d.StorageDriver.Stat(ctx, path)
}

func (d gatedDriver) saw(path string) {
	select {
	case d.seen <- path:
	default:
	}
}

func (d gatedDriver) Name() string {
	if d.name != "" {
		return d.name
	}
	return d.StorageDriver.Name()
}

func (d gatedDriver) Move(ctx context.Context, from, to string) error {
	if d.hold == "commit" && strings.Contains(to, "/blobs/") {
		select {
		case <-d.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return d.StorageDriver.Move(ctx, from, to)
}

func (d gatedDriver) Writer(ctx context.Context, path string, append bool) (storagedriver.FileWriter, error) {
	w, err := d.StorageDriver.Writer(ctx, path, append)
	if err != nil || d.hold != "write" || !strings.Contains(path, "/_uploads/") {
		return w, err
	}
	return gatedWriter{FileWriter: w, gate: d.gate}, nil
}

type gatedWriter struct {
	storagedriver.FileWriter
	gate chan struct{}
}

func (w gatedWriter) Write(p []byte) (int, error) {
	<-w.gate
	return w.FileWriter.Write(p)
}

// registerGated makes the storage driver "gated" known to distribution
// (its factory registry is process-wide: once).
var registerGated = sync.OnceFunc(func() {
	factory.Register("gated", gatedFactory{})
})

type gatedFactory struct{}

func (gatedFactory) Create(_ context.Context, params map[string]any) (storagedriver.StorageDriver, error) {
	d, err := filesystem.FromParameters(map[string]any{"rootdirectory": params["rootdirectory"]})
	if err != nil {
		return nil, err
	}
	name, _ := params["name"].(string)
	seen, _ := params["seen"].(chan string)
	return gatedDriver{StorageDriver: d, gate: params["gate"].(chan struct{}), hold: params["hold"].(string), name: name, seen: seen}, nil
}

// startGated starts a cache in front of upstream over a gatedDriver that
// holds hold (reporting name, if set); open lets it go on (once), as the
// test's cleanup does at the latest.
func startGated(t *testing.T, upstream, hold, name string) (cache *regtest.Server, open func()) {
	cache, open, _ = startGatedWith(t, upstream, hold, name, nil)
	return cache, open
}

// startGatedWith is startGated with more cache options; seen is the
// driver's (see gatedDriver).
func startGatedWith(t *testing.T, upstream, hold, name string, extra map[string]any) (cache *regtest.Server, open func(), seen chan string) {
	registerGated()
	gate := make(chan struct{})
	seen = make(chan string, 256)
	open = sync.OnceFunc(func() { close(gate) })
	st := regtest.Storage{Driver: "gated", Params: map[string]any{"rootdirectory": t.TempDir(), "gate": gate, "hold": hold, "name": name, "seen": seen}}
	cache = regtest.StartCacheOn(t, st, upstream, extra)
	t.Cleanup(open)
	return cache, open, seen
}

// A client gets its last byte once the blob is verified, not once it is
// committed to storage: a commit that hangs (an fsync, a server-side copy)
// does not hold the response. The blob is stored once the commit is let
// through, and then served without the upstream.
func TestLastByteBeforeCommit(t *testing.T) {
	fake, srv := newFakeUpstream(t, "ok", 3<<20)
	cache, open := startGated(t, srv.URL, "commit", "")
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	url := cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String()

	// Bounded only so that a failure does not hang the run: the commit
	// waits for the gate, which opens after the body was read.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := blobGETWith(ctx, client, url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("the response did not end while the commit waited: %v", err)
	}
	if !bytes.Equal(body, fake.blob) {
		t.Fatalf("got %d bytes, not the blob", len(body))
	}
	open()
	fillsDone(t, cache)
	resp, err = blobGETWith(t.Context(), client, url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body, fake.blob) || fake.gets.Load() != 1 {
		t.Fatalf("after the commit: %d bytes, %d upstream GETs; want the blob from storage", len(body), fake.gets.Load())
	}
}

// Requests that join a fill while it is asking the origin with their own
// credential and repository share its answer: no HEAD of their own. Those
// of another credential still ask the origin themselves. Decisions are
// off (authttl 0), so that no request is allowed by another's answer.
func TestJoinersShareTheirCredentialsAnswer(t *testing.T) {
	noLeaks(t)
	fake, srv := newFakeUpstream(t, "late", 1<<20)
	cache := regtest.StartCache(t, srv.URL, map[string]any{"authttl": "0s"})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(client.CloseIdleConnections)
	url := cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String()

	const alices, bobs = 24, 8
	var wg sync.WaitGroup
	errs := make(chan error, alices+bobs)
	get := func(user string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
			req.SetBasicAuth(user, "secret")
			if err := getExpect(client, req, fake.blob); err != nil {
				errs <- errors.New(user + ": " + err.Error())
			}
		}()
	}
	get("alice") // starts the fill
	if err := cache.WaitInFlight(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	for range alices - 1 {
		get("alice")
	}
	for range bobs {
		get("bob")
	}
	if err := cache.WaitInFlight(t.Context(), alices+bobs); err != nil {
		t.Fatal(err)
	}
	// bob's requests ask the origin before they wait for the fill.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for fake.heads.Load() < bobs {
		select {
		case <-ctx.Done():
			t.Fatalf("%d HEADs at the origin, want at least bob's %d", fake.heads.Load(), bobs)
		case <-tick.C:
		}
	}
	// Every alice but the first waits for the fill's answer (on a busy
	// machine one may reach the fill only after bob's HEADs).
	for cache.Cache.FillSharing(fake.dgst) < alices-1 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d of alice's joiners wait for the fill's answer, want %d", cache.Cache.FillSharing(fake.dgst), alices-1)
		case <-tick.C:
		}
	}
	fake.unblock()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := fake.gets.Load(); got != 1 {
		t.Errorf("%d upstream GETs, want 1", got)
	}
	if got := fake.heads.Load(); got != bobs {
		t.Errorf("%d upstream HEADs, want %d (bob's, none of alice's)", got, bobs)
	}
}

// getExpect sends req and checks that the answer is a 200 or 206 with
// exactly want.
func getExpect(client *http.Client, req *http.Request, want []byte) error {
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode/100 != 2 || !bytes.Equal(body, want) {
		return fmt.Errorf("%s, %d bytes, %v: not the %d bytes wanted", resp.Status, len(body), err, len(want))
	}
	return nil
}

// Bytes a fill received reach the client while the upstream holds the
// rest: net/http buffers a response's writes below 4 KiB (and HTTP/2 its
// frames), and the first upstream read is often the few KiB that came with
// the headers, which would otherwise wait for the next upstream read.
func TestFirstBytesNotHeldInTheResponseBuffer(t *testing.T) {
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			noLeaks(t)
			// The upstream sends 1000 bytes and holds the other 1000.
			fake, srv := newFakeUpstream(t, "slow", 2000)
			var cache *regtest.Server
			client := &http.Client{Transport: &http.Transport{}}
			if proto == "HTTP/2.0" {
				ca := regtest.NewCA(t)
				cache = regtest.StartCacheTLS(t, srv.URL, nil, ca)
				client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}}
			} else {
				cache = regtest.StartCache(t, srv.URL, nil)
			}
			t.Cleanup(client.CloseIdleConnections)

			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			resp, err := blobGETWith(ctx, client, cache.URL+"/v2/test/blob/blobs/"+fake.dgst.String())
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.Proto != proto {
				t.Fatalf("the response came over %s, not %s", resp.Proto, proto)
			}
			got := make([]byte, 1000)
			if _, err := io.ReadFull(resp.Body, got); err != nil {
				t.Fatalf("the first 1000 bytes did not arrive while the upstream held the rest: %v", err)
			}
			fake.unblock()
			rest, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(append(got, rest...), fake.blob) {
				t.Fatalf("wrong body (%v)", err)
			}
		})
	}
}

// On an object store, a fill's download goes on while the store's writer
// uploads a part inside Write: the fill may run a part size (10 MiB on s3)
// further ahead of storage than on the filesystem, so a client gets 12 MiB
// while storage waits.
func TestDownloadGoesOnWhileAPartUploads(t *testing.T) {
	// Named as s3's; nothing is stored while the gate is closed, so no
	// byte leaves the window and the client cannot fall behind it.
	fake, srv := newFakeUpstream(t, "ok", 16<<20)
	cache, open := startGated(t, srv.URL, "write", "s3aws")
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	// Bounded only so that a failure does not hang the run.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := blobGETWith(ctx, client, cache.URL+"/v2/test/blob/blobs/"+fake.dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make([]byte, 12<<20)
	if n, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("got %d bytes while the part uploaded: %v", n, err)
	}
	open()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(got, rest...), fake.blob) {
		t.Fatalf("wrong body (%v)", err)
	}
	fillsDone(t, cache)
}
