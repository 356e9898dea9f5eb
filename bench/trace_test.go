package main

import (
	"net/http"
	"testing"
	"time"
)

// analyse places each request on crane's timeline and, for a cache, each
// layer's origin request inside the client's: how long before the origin
// was asked (lead) and how long after its last byte the client got its own
// (tail).
func TestTraceAnalyse(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	dur := func(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
	tr := pullTrace{t0: t0,
		client: []logEntry{
			{msg: "request", method: http.MethodGet, kind: "base", status: 401, end: at(11), dur: dur(1)},
			{msg: "request", method: http.MethodGet, kind: "manifest", status: 200, end: at(20), dur: dur(8)},
			// two layers at once, then the config
			{msg: "request", method: http.MethodGet, kind: "blob", digest: "sha256:l2", status: 200, written: 1 << 20, end: at(400), dur: dur(370)},
			{msg: "request", method: http.MethodGet, kind: "blob", digest: "sha256:l1", status: 200, written: 1 << 20, end: at(300), dur: dur(275)},
			{msg: "request", method: http.MethodGet, kind: "blob", digest: "sha256:cf", status: 200, written: 700, end: at(420), dur: dur(10)},
		},
		origin: []logEntry{
			{msg: "error authorizing context", method: http.MethodGet, uri: "/v2/", status: 401, end: at(10)},
			{msg: "response completed", method: http.MethodHead, uri: "/v2/r/manifests/t", status: 200, end: at(15), dur: dur(2)},
			{msg: "response completed", method: http.MethodGet, uri: "/v2/r/blobs/sha256:l1", status: 200, end: at(200), dur: dur(173)},
			{msg: "response completed", method: http.MethodGet, uri: "/v2/r/blobs/sha256:l2", status: 200, end: at(250), dur: dur(218)},
			{msg: "response completed", method: http.MethodGet, uri: "/v2/r/blobs/sha256:cf", status: 200, end: at(415), dur: dur(3)},
		},
		total: dur(430),
	}
	tr.analyse()
	if tr.firstReq != dur(10) || tr.mfstEnd != dur(20) || tr.firstBlob != dur(25) || tr.lastEnd != dur(420) {
		t.Errorf("timeline: first request %v, manifest %v, first blob %v, last end %v", tr.firstReq, tr.mfstEnd, tr.firstBlob, tr.lastEnd)
	}
	if tr.maxBlobsInFlight != 2 || tr.configDur != dur(10) || len(tr.layers) != 2 {
		t.Fatalf("in flight %d, config %v, layers %+v", tr.maxBlobsInFlight, tr.configDur, tr.layers)
	}
	l1, l2 := tr.layers[0], tr.layers[1] // by start
	if l1.digest != "sha256:l1" || l1.oStart-l1.start != dur(2) || l1.end-l1.oEnd != dur(100) || !l1.hasOrigin {
		t.Errorf("layer 1: %+v", l1)
	}
	if l2.digest != "sha256:l2" || l2.oStart-l2.start != dur(2) || l2.end-l2.oEnd != dur(150) {
		t.Errorf("layer 2: %+v", l2)
	}
	c := tr.originCounts()
	if c["401"] != 1 || c["HEAD manifest"] != 1 || c["GET blob"] != 3 || c["GET base"] != 0 {
		t.Errorf("origin counts: %v", c)
	}
	if d := tr.originNonBlob(); d != dur(2) {
		t.Errorf("origin's time on other requests: %v", d)
	}
}
