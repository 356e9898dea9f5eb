package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// reqLog collects the request lines of one registry process: distribution's
// "response completed" (and "response completed with error"), with the
// method, URI, status, body bytes written and duration, and content-cache's
// one "request" line per request (method, kind, result, status, bytes,
// duration, repository, digest). From the origin's, the harness counts what
// the caches fetched: no proxy in the data path is needed to count. From a
// cache's, the pull-trace scenario draws the timeline of a pull.
type reqLog struct {
	mu      sync.Mutex
	entries []logEntry
	changed chan struct{}
}

// logEntry is one request as its server logged it.
type logEntry struct {
	msg         string // "response completed", "response completed with error", "error authorizing context" or "request"
	method, uri string // uri: distribution's lines only
	kind        string // content-cache's lines: blob, manifest, base...
	result      string // content-cache's lines: hit, miss, ...
	repo        string
	digest      string // content-cache's lines
	status      int
	written     int64
	end         time.Time     // when the line was logged: the end of the request
	dur         time.Duration // 0 when the line has none (an authorization challenge)
}

func (e logEntry) start() time.Time { return e.end.Add(-e.dur) }

// completed is a 2xx or 3xx answer of distribution.
func (e logEntry) completed() bool { return e.msg == "response completed" }

// blobDigest is the digest of a blob request ("" for other requests).
func (e logEntry) blobDigest() string {
	if e.kind == "blob" {
		return e.digest
	}
	if _, d, ok := strings.Cut(e.uri, "/blobs/"); ok {
		return d
	}
	return ""
}

// route is the kind of request: blob, manifest, base (the ping) or other.
func (e logEntry) route() string {
	switch {
	case e.kind != "":
		return e.kind
	case strings.Contains(e.uri, "/blobs/"):
		return "blob"
	case strings.Contains(e.uri, "/manifests/"):
		return "manifest"
	case e.uri == "/v2/" || strings.HasPrefix(e.uri, "/v2/?"):
		return "base"
	}
	return "other"
}

func newReqLog() *reqLog { return &reqLog{changed: make(chan struct{})} }

// line takes one line of the process's output; at is when it was read,
// used when the line has no time of its own.
func (o *reqLog) line(at time.Time, s string) {
	if !strings.Contains(s, `"response completed`) && !strings.Contains(s, `"msg":"request"`) && !strings.Contains(s, `"error authorizing context`) {
		return
	}
	var f struct {
		Msg  string `json:"msg"`
		Time string `json:"time"`
		// distribution
		Method   string `json:"http.request.method"`
		URI      string `json:"http.request.uri"`
		Status   int    `json:"http.response.status"`
		Written  int64  `json:"http.response.written"`
		Duration string `json:"http.response.duration"`
		// content-cache
		CMethod   string `json:"method"`
		Kind      string `json:"kind"`
		Result    string `json:"result"`
		CStatus   int    `json:"status"`
		Bytes     int64  `json:"bytes"`
		CDuration string `json:"duration"`
		Repo      string `json:"repository"`
		Digest    string `json:"digest"`
	}
	if json.Unmarshal([]byte(s), &f) != nil {
		return
	}
	e := logEntry{msg: f.Msg, method: f.Method, uri: f.URI, status: f.Status, written: f.Written, end: at}
	if t, err := time.Parse(time.RFC3339Nano, f.Time); err == nil {
		e.end = t
	}
	if f.Msg == "request" {
		if f.Kind == "" {
			return
		}
		e.method, e.kind, e.result, e.status, e.written, e.repo, e.digest = f.CMethod, f.Kind, f.Result, f.CStatus, f.Bytes, f.Repo, f.Digest
		e.dur, _ = time.ParseDuration(f.CDuration)
	} else {
		e.dur, _ = time.ParseDuration(f.Duration)
		if strings.HasPrefix(f.Msg, "error authorizing context") {
			e.status = http.StatusUnauthorized
		}
	}
	o.mu.Lock()
	o.entries = append(o.entries, e)
	close(o.changed)
	o.changed = make(chan struct{})
	o.mu.Unlock()
}

// mark is a position in the log.
func (o *reqLog) mark() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.entries)
}

// between returns the entries logged since mark.
func (o *reqLog) between(mark int) []logEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]logEntry, len(o.entries)-mark)
	copy(out, o.entries[mark:])
	return out
}

// syncSeq numbers the harness's sync requests; it lives in the bench (no
// package-level state).
type syncSeq struct {
	sync.Mutex
	n int
}

func (s *syncSeq) next() int {
	s.Lock()
	defer s.Unlock()
	s.n++
	return s.n
}

// sync makes sure every request p finished before now is in its log: it
// sends a request of its own and waits for its line, which p writes after
// the others. A distribution registry logs the URI of a ping; content-cache
// logs only the route of a ping, so it gets a manifest request in a
// repository named after the sync, which the origin refuses (404), and the
// line is found by its repository.
func (o *reqLog) sync(ctx context.Context, hc *http.Client, p *proc, seq *syncSeq, isCache bool) error {
	n := seq.next()
	uri := fmt.Sprintf("/v2/?bench-sync=%d", n)
	var match func(logEntry) bool
	if isCache {
		repo := fmt.Sprintf("bench-sync/n%d", n)
		uri = "/v2/" + repo + "/manifests/latest"
		match = func(e logEntry) bool { return e.repo == repo }
	} else {
		want := uri
		match = func(e logEntry) bool { return e.uri == want }
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+uri, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(benchUser, benchPassword)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		o.mu.Lock()
		ch := o.changed
		for i := len(o.entries) - 1; i >= 0 && i >= len(o.entries)-1000; i-- {
			if match(o.entries[i]) {
				o.mu.Unlock()
				return nil
			}
		}
		o.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%s: the log line for %s did not come", p.name, uri)
		}
	}
}

// upstreamCount is what the origin served for blobs and manifests.
type upstreamCount struct {
	blobGets, blobHeads, manifestReqs int
	blobBytes                         int64
	// blobSpan: from the start of the first blob GET to the end of the
	// last, as the origin logged them (the fills' time at the origin).
	blobStart, blobEnd time.Time
}

// blobSpan is the time from the first blob GET's start to the last one's
// end (0 without any).
func (c upstreamCount) blobSpan() time.Duration {
	if c.blobStart.IsZero() {
		return 0
	}
	return c.blobEnd.Sub(c.blobStart)
}

// since counts the origin's 2xx and 3xx answers after mark (sync first).
func (o *reqLog) since(mark int) upstreamCount {
	var c upstreamCount
	for _, e := range o.between(mark) {
		if !e.completed() {
			continue
		}
		switch {
		case strings.Contains(e.uri, "/blobs/sha256:"):
			if e.method == http.MethodGet {
				c.blobGets++
				c.blobBytes += e.written
				if c.blobStart.IsZero() || e.start().Before(c.blobStart) {
					c.blobStart = e.start()
				}
				if e.end.After(c.blobEnd) {
					c.blobEnd = e.end
				}
			} else if e.method == http.MethodHead {
				c.blobHeads++
			}
		case strings.Contains(e.uri, "/manifests/"):
			c.manifestReqs++
		}
	}
	return c
}
