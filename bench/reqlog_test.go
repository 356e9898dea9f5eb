package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Both kinds of request line are read, with their own time as the end of
// the request; other lines are ignored.
func TestReqLogParsesBothFormats(t *testing.T) {
	l := newReqLog()
	read := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // when the harness read the lines
	for _, s := range []string{
		`{"http.request.method":"GET","http.request.uri":"/v2/r/blobs/sha256:abcd","http.response.duration":"52.5ms","http.response.status":200,"http.response.written":1048576,"level":"info","msg":"response completed","time":"2026-12-02T02:52:00.1Z"}`,
		`{"bytes":65536,"component":"downstream","digest":"sha256:639e","duration":"19.1ms","kind":"blob","level":"info","method":"GET","msg":"request","repository":"library/app","result":"hit","status":200,"time":"2026-12-02T02:52:01Z","upstream":"registry.example.com"}`,
		`{"http.request.method":"GET","http.request.uri":"/v2/","level":"warning","msg":"error authorizing context: basic authentication challenge for realm \"bench-origin\": invalid authorization credential","time":"2026-12-02T02:52:02Z"}`,
		`{"level":"info","msg":"listening on 127.0.0.1:5000","time":"2026-12-02T02:52:03Z"}`,
		`not json, "response completed"`,
	} {
		l.line(read, s)
	}
	es := l.between(0)
	if len(es) != 3 {
		t.Fatalf("%d entries, want 3: %+v", len(es), es)
	}
	d, c, a := es[0], es[1], es[2]
	if d.route() != "blob" || d.blobDigest() != "sha256:abcd" || d.status != 200 || d.written != 1<<20 || !d.completed() || d.dur != 52500*time.Microsecond {
		t.Errorf("distribution's line: %+v", d)
	}
	if want := time.Date(2026, 12, 2, 2, 52, 0, 100e6, time.UTC); !d.end.Equal(want) || !d.start().Equal(want.Add(-52500*time.Microsecond)) {
		t.Errorf("distribution's line: end %v start %v, want end %v", d.end, d.start(), want)
	}
	if c.route() != "blob" || c.blobDigest() != "sha256:639e" || c.result != "hit" || c.repo != "library/app" || c.written != 65536 || c.dur != 19100*time.Microsecond || c.completed() {
		t.Errorf("content-cache's line: %+v", c)
	}
	if a.status != http.StatusUnauthorized || a.route() != "base" || a.dur != 0 {
		t.Errorf("challenge: %+v", a)
	}
	// A line without a time of its own ends when it was read.
	l.line(read, `{"msg":"request","kind":"manifest","method":"HEAD","duration":"1ms"}`)
	if e := l.between(3)[0]; !e.end.Equal(read) || e.route() != "manifest" {
		t.Errorf("no time: %+v", e)
	}
}

// since counts only the 2xx and 3xx answers of the origin, by route.
func TestReqLogSinceCountsCompleted(t *testing.T) {
	l := newReqLog()
	now := time.Now()
	for _, s := range []string{
		`{"http.request.method":"GET","http.request.uri":"/v2/r/blobs/sha256:aa","http.response.written":10,"http.response.status":200,"http.response.duration":"5ms","msg":"response completed"}`,
		`{"http.request.method":"HEAD","http.request.uri":"/v2/r/blobs/sha256:aa","http.response.status":200,"msg":"response completed"}`,
		`{"http.request.method":"HEAD","http.request.uri":"/v2/r/manifests/latest","http.response.status":200,"msg":"response completed"}`,
		`{"http.request.method":"GET","http.request.uri":"/v2/r/blobs/sha256:bb","http.response.status":404,"msg":"response completed with error"}`,
		`{"http.request.method":"GET","http.request.uri":"/v2/","msg":"error authorizing context: challenge"}`,
	} {
		l.line(now, s)
	}
	got := l.since(0)
	if want := (upstreamCount{blobGets: 1, blobHeads: 1, manifestReqs: 1, blobBytes: 10, blobStart: now.Add(-5 * time.Millisecond), blobEnd: now}); got != want {
		t.Errorf("since: %+v, want %+v", got, want)
	}
	if got.blobSpan() != 5*time.Millisecond {
		t.Errorf("blob span %v, want the GET's 5ms", got.blobSpan())
	}
}

// The A/B table takes the median of the per-repeat ratios, not the ratio
// of the medians, and prints nothing without a base.
func TestABTablePairsRepeats(t *testing.T) {
	s := series{"new": {1, 10, 100}, "base": {2, 5, 100}}
	ms := []abMetric{{"x", "new", "base", fmtCount, true}}
	b := &bench{}
	b.abTable("t", s, ms)
	if b.md.Len() != 0 {
		t.Fatalf("without a base: %q", b.md.String())
	}
	b.base = "bin/base"
	b.abTable("t", s, ms)
	// Ratios 0.5, 2 and 1: median 1; the medians' ratio would be 2.
	if out := b.md.String(); !strings.Contains(out, "| x | 10 | 5 | 1.00× | 0.50× … 2.00× | higher |") {
		t.Errorf("A/B table:\n%s", out)
	}
}

// -tls: the registry serves HTTPS, and each cache reaches its upstream
// over HTTPS trusting the harness's CA; without it, plain HTTP as before.
func TestRegistryConfigTLS(t *testing.T) {
	f := &tlsFiles{ca: "/w/ca.pem", cert: "/w/server.pem", key: "/w/server-key.pem"}
	cache := registryConfig(kindCache, "", "127.0.0.1:1", "127.0.0.1:2", "/w/htpasswd", "127.0.0.1:3", f, "")
	for _, want := range []string{"tls: {certificate: /w/server.pem, key: /w/server-key.pem}", "upstreams: [https://127.0.0.1:3]", "cas: [/w/ca.pem]"} {
		if !strings.Contains(cache, want) {
			t.Errorf("cache config lacks %q:\n%s", want, cache)
		}
	}
	if proxy := registryConfig(kindProxy, "", "127.0.0.1:1", "127.0.0.1:2", "/w/htpasswd", "127.0.0.1:3", f, ""); !strings.Contains(proxy, "remoteurl: https://127.0.0.1:3") {
		t.Errorf("proxy config:\n%s", proxy)
	}
	plain := registryConfig(kindCache, "", "127.0.0.1:1", "127.0.0.1:2", "/w/htpasswd", "127.0.0.1:3", nil, "")
	if strings.Contains(plain, "tls") || strings.Contains(plain, "cas:") || !strings.Contains(plain, "upstreams: [http://127.0.0.1:3]") {
		t.Errorf("plain config:\n%s", plain)
	}
}
