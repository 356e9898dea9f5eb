package downstream_test

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/content-cache/content-cache/internal/regtest"
)

// fakeUpstream serves one blob in a chosen faulty way. A real registry
// cannot show these faults.
type fakeUpstream struct {
	blob    []byte
	dgst    digest.Digest
	mode    string        // ok, wrong, short, hang, long, slow, late
	release chan struct{} // "hang", "slow" and "late": closed to let the rest through
	gets    atomic.Int32
	heads   atomic.Int32
}

func newFakeUpstream(t *testing.T, mode string, size int) (*fakeUpstream, *httptest.Server) {
	blob := make([]byte, size)
	rand.New(rand.NewSource(int64(size))).Read(blob)
	f := &fakeUpstream{blob: blob, dgst: digest.FromBytes(blob), mode: mode, release: make(chan struct{})}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Cleanup(f.unblock)
	return f, srv
}

func (f *fakeUpstream) unblock() {
	select {
	case <-f.release:
	default:
		close(f.release)
	}
}

func (f *fakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v2/private/") {
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if !strings.HasSuffix(r.URL.Path, "/blobs/"+f.dgst.String()) {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(f.blob)))
	w.Header().Set("Docker-Content-Digest", f.dgst.String())
	if r.Method == http.MethodHead {
		f.heads.Add(1)
		return
	}
	f.gets.Add(1)
	if f.mode == "late" { // no answer before the release
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(f.blob)
		return
	}
	half := len(f.blob) / 2
	switch f.mode {
	case "ok":
		_, _ = w.Write(f.blob)
	case "wrong":
		bad := bytes.Clone(f.blob)
		bad[len(bad)-1] ^= 0xff
		_, _ = w.Write(bad)
	case "short":
		_, _ = w.Write(f.blob[:half])
		// Returning early makes net/http close the connection: a
		// truncated body.
	case "hang", "slow":
		_, _ = w.Write(f.blob[:half])
		w.(http.Flusher).Flush()
		select {
		case <-f.release:
		case <-r.Context().Done():
			return
		}
		if f.mode == "slow" {
			_, _ = w.Write(f.blob[half:])
		}
	case "error":
		_, _ = w.Write(f.blob[:half])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
}

// blobStored reports whether the cache's storage holds the blob's data.
func blobStored(root string, d digest.Digest) bool {
	_, err := os.Stat(filepath.Join(root, "docker/registry/v2/blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded(), "data"))
	return err == nil
}

// uploadsLeft lists what fills left in the repositories' _uploads
// directories.
func uploadsLeft(t *testing.T, root string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(root, "docker/registry/v2/repositories/*/*/_uploads/*"))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// noLeaks checks, after every other cleanup, that the test left no
// goroutine behind. distribution's app starts a notification broadcaster it
// never stops: that one is not ours.
func noLeaks(t *testing.T) {
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		goleak.VerifyNone(t, current, goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
	})
}

func TestFaultyUpstreamNothingKept(t *testing.T) {
	for _, mode := range []string{"wrong", "short", "error", "hang"} {
		t.Run(mode, func(t *testing.T) {
			noLeaks(t)
			fake, srv := newFakeUpstream(t, mode, 3<<20)
			cache := regtest.StartCache(t, srv.URL, map[string]any{"idletimeout": "300ms"})
			client := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(client.CloseIdleConnections)
			url := cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String()
			for attempt := 1; attempt <= 2; attempt++ {
				resp, err := client.Get(url)
				if err != nil {
					t.Fatal(err)
				}
				got, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				if rerr == nil && resp.StatusCode == http.StatusOK {
					t.Fatalf("attempt %d: a complete-looking body of %d bytes from a faulty upstream", attempt, len(got))
				}
				if len(got) >= len(fake.blob) {
					t.Fatalf("attempt %d: received %d bytes, at least the whole blob", attempt, len(got))
				}
				if blobStored(cache.Root, fake.dgst) {
					t.Fatalf("attempt %d: the faulty blob was kept", attempt)
				}
				if n := fake.gets.Load(); n != int32(attempt) {
					t.Fatalf("attempt %d: upstream saw %d GETs, want %d (nothing cached)", attempt, n, attempt)
				}
			}
			fake.unblock()
			_ = cache.Cache.Close() // waits for the fills
			if left := uploadsLeft(t, cache.Root); len(left) > 0 {
				t.Fatalf("failed fills left uploads behind: %q", left)
			}
		})
	}
}

func TestLeaderCancelsOthersComplete(t *testing.T) {
	noLeaks(t)
	fake, srv := newFakeUpstream(t, "slow", 4<<20)
	cache := regtest.StartCache(t, srv.URL, nil)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	url := cache.URL + "/v2/test/blob/blobs/" + fake.dgst.String()

	// The leader reads the first bytes, then goes away.
	ctx, cancel := context.WithCancel(t.Context())
	leader, err := blobGETWith(ctx, client, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(leader.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}

	// Others join the fill in progress.
	var wg sync.WaitGroup
	results := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := blobGETWith(t.Context(), client, url)
			if err != nil {
				results <- err
				return
			}
			defer resp.Body.Close()
			v := fake.dgst.Verifier()
			if n, err := io.Copy(v, resp.Body); err != nil || n != int64(len(fake.blob)) || !v.Verified() {
				results <- io.ErrUnexpectedEOF
				return
			}
			results <- nil
		}()
	}
	// Wait until the joiners hold their first bytes: they are streaming.
	if err := cache.WaitInFlight(t.Context(), 5); err != nil {
		t.Fatal(err)
	}
	cancel()
	leader.Body.Close()
	fake.unblock()
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
	}
	if n := fake.gets.Load(); n != 1 {
		t.Fatalf("upstream saw %d GETs, want 1", n)
	}
	_ = cache.Cache.Close() // the fill commits before Close returns
	if !blobStored(cache.Root, fake.dgst) {
		t.Fatal("the blob was not kept after the fill completed for the others")
	}
}

func blobGETWith(ctx context.Context, c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}

// A fill in progress for one repository does not authorize the same
// credential for another repository.
func TestJoiningFillAuthorizesPerRepository(t *testing.T) {
	noLeaks(t)
	fake, srv := newFakeUpstream(t, "slow", 1<<20)
	cache := regtest.StartCache(t, srv.URL, nil)
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	leader, err := blobGETWith(t.Context(), client, cache.URL+"/v2/test/blob/blobs/"+fake.dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer leader.Body.Close()
	if _, err := io.ReadFull(leader.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	resp, err := blobGETWith(t.Context(), client, cache.URL+"/v2/private/x/blobs/"+fake.dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="fake"` {
		t.Fatalf("same credential, other repository, during a fill: %d %q (%d bytes), want the origin's 401", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), len(body))
	}
	fake.unblock()
	if _, err := io.Copy(io.Discard, leader.Body); err != nil {
		t.Fatal(err)
	}
}
