package downstream_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// images pushes n one-layer images to origin, one repository each.
func images(t *testing.T, origin *regtest.Server, n int) []regtest.Image {
	var imgs []regtest.Image
	for i := range n {
		img := regtest.RandomImage(int64(100+i), 1, 10_000)
		img.Repo = "rr/app" + string(rune('a'+i))
		push(t, origin, img)
		imgs = append(imgs, img)
	}
	return imgs
}

func layerPath(img regtest.Image) string {
	return "/v2/" + img.Repo + "/blobs/" + digest.FromBytes(img.Layers[0]).String()
}

func TestRoundRobinAcrossUpstreamCaches(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	c1 := regtest.StartCache(t, origin.URL, nil)
	c2 := regtest.StartCache(t, origin.URL, nil)
	edge := regtest.StartCache(t, "", map[string]any{"upstreams": []any{
		map[any]any{"originhost": origin.URL, "upstreamhosts": []any{c1.URL, c2.URL}},
	}})
	imgs := images(t, origin, 4)
	c := &regtest.Client{Base: edge.URL}
	for _, img := range imgs {
		pullImage(t, c, img)
	}
	// Every upstream request rotates: count them all.
	count := func(s *regtest.Server) int {
		n := 0
		for k, v := range s.Counts.Snapshot() {
			if strings.Contains(k, " /v2/rr/") {
				n += v
			}
		}
		return n
	}
	n1, n2 := count(c1), count(c2)
	if n1 == 0 || n2 == 0 || n1 > 2*n2 || n2 > 2*n1 {
		t.Fatalf("requests: upstream cache 1 %d, upstream cache 2 %d; want them shared round-robin", n1, n2)
	}
	for _, img := range imgs {
		if n := origin.Counts.Get(http.MethodGet, layerPath(img)); n != 1 {
			t.Fatalf("origin saw %d GETs of a layer, want 1 (from the upstream caches)", n)
		}
	}
}

// deadUpstream accepts connections and closes them at once, counting them.
func deadUpstream(t *testing.T) (string, *atomic.Int32) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return "http://" + l.Addr().String(), &n
}

func TestFailoverAndBackoff(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	dead, attempts := deadUpstream(t)
	live := regtest.StartCache(t, origin.URL, nil)
	edge := regtest.StartCache(t, "", map[string]any{
		"upstreams": []any{dead, live.URL, origin.URL},
		"backoff":   "1h",
	})
	imgs := images(t, origin, 6)
	c := &regtest.Client{Base: edge.URL}
	for i, img := range imgs {
		if i == 3 {
			live.Kill() // mid-run: the origin is left
		}
		pullImage(t, c, img)
	}
	if n := attempts.Load(); n != 1 {
		t.Fatalf("the dead upstream was tried %d times, want 1 (then skipped for the backoff)", n)
	}
	for _, img := range imgs[3:] {
		if n := origin.Counts.Get(http.MethodGet, layerPath(img)); n != 1 {
			t.Fatalf("after the kill the origin served %s %d times, want 1", img.Repo, n)
		}
	}
}

func TestHungUpstreamFailsOverWithinTimeout(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) })
	edge := regtest.StartCache(t, "", map[string]any{
		"upstreams":     []any{map[any]any{"originhost": origin.URL, "upstreamhosts": []any{hung.URL}}},
		"headertimeout": "300ms",
	})
	imgs := images(t, origin, 1)
	pullImage(t, &regtest.Client{Base: edge.URL}, imgs[0])
}

// A 404 from the first upstream is an answer and goes to the client: no
// failover.
func TestNotFoundIsAnAnswer(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	other := regtest.StartOrigin(t, nil) // lacks everything
	imgs := images(t, origin, 1)
	edge := regtest.StartCache(t, "", map[string]any{"upstreams": []any{other.URL, origin.URL}})
	status, _, _ := get(t, &regtest.Client{Base: edge.URL}, http.MethodGet, layerPath(imgs[0]), nil)
	if status != http.StatusNotFound {
		t.Fatalf("status %d, want the first upstream's 404", status)
	}
	if n := origin.Counts.Get(http.MethodGet, layerPath(imgs[0])); n != 0 {
		t.Fatalf("a 404 failed over to the next upstream (%d GETs)", n)
	}
}

func TestResumeFromAnotherUpstreamMidStream(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	fake, srv := newFakeUpstream(t, "short", 2<<20)
	// Put the fake's blob at the origin too, under the fake's repository.
	img := regtest.RandomImage(7, 0, 0)
	img.Repo = "test/blob"
	img.Layers = [][]byte{fake.blob}
	push(t, origin, img)
	edge := regtest.StartCache(t, "", map[string]any{"upstreams": []any{srv.URL, origin.URL}})
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	resp, err := client.Get(edge.URL + "/v2/test/blob/blobs/" + fake.dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, fake.blob) {
		t.Fatalf("status %d, %d bytes, err %v: want the whole blob, resumed from the origin", resp.StatusCode, len(body), err)
	}
	if n := fake.gets.Load(); n != 1 {
		t.Fatalf("the failing upstream saw %d GETs, want 1", n)
	}
	if n := origin.Counts.Get(http.MethodGet, "/v2/test/blob/blobs/"+fake.dgst.String()); n != 1 {
		t.Fatalf("the origin saw %d GETs, want 1 (the ranged resume)", n)
	}
}

func TestLoopIsDetected(t *testing.T) {
	var target atomic.Pointer[url.URL]
	loopback := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(target.Load())
		pr.Out.Header["Via"] = pr.In.Header["Via"]
	}})
	t.Cleanup(loopback.Close)
	b := regtest.StartCache(t, loopback.URL, nil)
	a := regtest.StartCache(t, b.URL, nil)
	u, _ := url.Parse(a.URL)
	target.Store(u)

	status, _, body := get(t, &regtest.Client{Base: a.URL}, http.MethodGet, "/v2/any/repo/manifests/latest", nil)
	if status != http.StatusLoopDetected || !strings.Contains(string(body), "LOOP_DETECTED") || !strings.Contains(string(body), "form a loop") {
		t.Fatalf("status %d %s, want 508 LOOP_DETECTED", status, body)
	}
}

func TestChainOverTLS(t *testing.T) {
	ca := regtest.NewCA(t)
	origin := regtest.StartOriginTLS(t, regtest.HtpasswdAuth(t, users), ca)
	middle := regtest.StartCacheTLS(t, origin.URL, map[string]any{"cas": []any{ca.File}}, ca)
	edge := regtest.StartCacheTLS(t, middle.URL, map[string]any{"cas": []any{ca.File}}, ca)
	img := regtest.RandomImage(40, 2, 20_000)
	img.Repo = "private/chain"
	if err := regtest.PushWith(t.Context(), ca.Client(), origin.URL, "alice", "alice-pw", img); err != nil {
		t.Fatal(err)
	}

	// Anonymous: the origin's challenge, through both hops.
	anon := &regtest.Client{Base: edge.URL, HTTP: ca.Client()}
	status, hdr, _ := get(t, anon, http.MethodGet, "/v2/", nil)
	if status != http.StatusUnauthorized || !strings.Contains(hdr.Get("WWW-Authenticate"), `realm="origin"`) {
		t.Fatalf("anonymous ping through the chain: %d %q, want the origin's 401 challenge", status, hdr.Get("WWW-Authenticate"))
	}
	c := &regtest.Client{Base: edge.URL, User: "carol", Pass: "carol-pw", HTTP: ca.Client()}
	pullImage(t, c, img)
	pullImage(t, c, img)
	fillsDone(t, middle) // fills commit after their clients' last byte
	fillsDone(t, edge)
	for _, layer := range img.Layers {
		d := digest.FromBytes(layer)
		for _, hop := range []*regtest.Server{middle, edge} {
			if !blobStored(hop.Root, d) {
				t.Fatalf("hop %s did not keep a copy of %s", hop.URL, d)
			}
		}
		if n := origin.Counts.Get(http.MethodGet, "/v2/private/chain/blobs/"+d.String()); n != 1 {
			t.Fatalf("origin saw %d GETs of a layer, want 1", n)
		}
	}

	// Tag freshness through both hops: a new image under the same tag.
	newer := regtest.RandomImage(41, 1, 1000)
	newer.Repo = img.Repo
	if err := regtest.PushWith(t.Context(), ca.Client(), origin.URL, "alice", "alice-pw", newer); err != nil {
		t.Fatal(err)
	}
	pullImage(t, c, newer)

	// The edge with a CA that does not trust the middle: a clear 5xx.
	other := regtest.NewCA(t)
	wrong := regtest.StartCache(t, middle.URL, map[string]any{"cas": []any{other.File}})
	status, _, body := get(t, &regtest.Client{Base: wrong.URL, User: "carol", Pass: "carol-pw"}, http.MethodGet, "/v2/", nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "UNAVAILABLE") || !strings.Contains(string(body), "certificate") {
		t.Fatalf("untrusted upstream certificate: %d %s, want 503 UNAVAILABLE naming the certificate error", status, body)
	}
}
