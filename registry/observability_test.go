package registry_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v2"
)

// stdlibLog matches a line of the standard library's logger.
var stdlibLog = regexp.MustCompile(`^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} `)

// startObserved starts a sample configuration with a debug server that
// serves Prometheus metrics, and logs at debug level with the logstash
// formatter. It returns the instance and the debug server's base URL.
func (f *fixture) startObserved(t *testing.T, src string) (instance, string) {
	t.Helper()
	path, base := f.rewrite(t, src)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[any]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	debugAddr := freeAddr(t)
	doc["log"] = map[any]any{"level": "debug", "formatter": "logstash"}
	httpSec, _ := mapAt(doc, "http")
	httpSec["debug"] = map[any]any{"addr": debugAddr, "prometheus": map[any]any{"enabled": true, "path": "/metrics"}}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, filepath.Base(src), childEnv(), "serve", path)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(client.CloseIdleConnections)
	waitReady(t, p, client, base)
	return instance{proc: p, base: base, client: client}, "http://" + debugAddr
}

// fetch GETs url with an optional Authorization header.
func fetch(t *testing.T, client *http.Client, url, authorization string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// waitFor polls url until ok accepts its answer (the health probes run in
// the background of the binary), for at most 15 seconds.
func waitFor(t *testing.T, client *http.Client, url string, ok func(status int, body string) bool) (int, string) {
	t.Helper()
	deadline := time.NewTimer(15 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		status, body := fetch(t, client, url, "")
		if ok(status, body) {
			return status, body
		}
		select {
		case <-deadline.C:
			t.Fatalf("GET %s: after 15s still\n%d %s", url, status, body)
		case <-tick.C:
		}
	}
}

// TestObservability runs the binary as an operator would: the cache's
// metrics on the debug server next to distribution's, the upstream check in
// /debug/health, and logstash (JSON) logs without credentials.
func TestObservability(t *testing.T) {
	f := &fixture{pki: newPKI(t), htpasswd: writeHtpasswd(t)}
	origin := f.startConfig(t, filepath.Join(configsDir, "origin.yml"))
	f.origin = origin.base
	cache, debug := f.startObserved(t, filepath.Join(configsDir, "cache.yml"))
	c := cache.client

	good := "Basic " + base64.StdEncoding.EncodeToString([]byte(testUser+":"+testPass))
	const token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.dG9rZW4tbmV2ZXItbG9nZ2Vk"
	missing := "/v2/library/app/blobs/sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		path, authorization string
		status              int
	}{
		{"/v2/", good, http.StatusOK},                               // base, forwarded
		{"/v2/", "Basic d3Jvbmc6d3Jvbmc=", http.StatusUnauthorized}, // base, denied
		{missing, good, http.StatusNotFound},                        // blob, error
		{missing, "Bearer " + token, http.StatusUnauthorized},       // blob, denied
	} {
		if status, body := fetch(t, c, cache.base+tc.path, tc.authorization); status != tc.status {
			t.Fatalf("GET %s: %d %s, want %d", tc.path, status, body, tc.status)
		}
	}

	// Each request is counted just before its handler returns, and the
	// first health probe runs in the background at startup: wait for the
	// values (an overshoot would never match, so they are exact).
	originHost := strings.TrimPrefix(origin.base, "http://")
	wants := []string{
		// waitReady's anonymous ping and the wrong password.
		`content_cache_requests_total{kind="base",registry="` + originHost + `",result="denied"} 2` + "\n",
		`content_cache_requests_total{kind="base",registry="` + originHost + `",result="forwarded"} 1` + "\n",
		`content_cache_requests_total{kind="blob",registry="` + originHost + `",result="error"} 1` + "\n",
		`content_cache_requests_total{kind="blob",registry="` + originHost + `",result="denied"} 1` + "\n",
		`content_cache_requests_total{kind="blob",registry="` + originHost + `",result="hit"} 0` + "\n",
		`content_cache_fills_in_flight 0` + "\n",
		`content_cache_upstream_up{upstream="` + originHost + `"} 1` + "\n",
		"# TYPE content_cache_upstream_request_duration_seconds histogram\n",
		// distribution's own, from the same default registry.
		"# TYPE registry_storage_",
	}
	waitFor(t, c, debug+"/metrics", func(status int, body string) bool {
		for _, want := range wants {
			if !strings.Contains(body, want) {
				return false
			}
		}
		return status == http.StatusOK
	})
	if status, body := fetch(t, c, debug+"/debug/health", ""); status != http.StatusOK || strings.TrimSpace(body) != "{}" {
		t.Errorf("/debug/health with the origin up: %d %s, want 200 {}", status, body)
	}

	// A cache whose only upstream is down: /debug/health says so, and
	// distribution's health gate answers 503 on /.
	dead := &fixture{pki: f.pki, htpasswd: f.htpasswd, origin: "http://" + freeAddr(t)}
	lonely, lonelyDebug := dead.startObserved(t, filepath.Join(configsDir, "cache.yml"))
	_, body := waitFor(t, lonely.client, lonelyDebug+"/debug/health", func(status int, _ string) bool {
		return status == http.StatusServiceUnavailable
	})
	var checks map[string]string
	if err := json.Unmarshal([]byte(body), &checks); err != nil || !strings.HasPrefix(checks["downstream_upstreams"], "no upstream is reachable: ") {
		t.Errorf("/debug/health with no upstream: %s, want the downstream_upstreams check failing", body)
	}
	if status, _ := fetch(t, lonely.client, lonely.base+"/", ""); status != http.StatusServiceUnavailable {
		t.Errorf("GET / with no upstream: %d, want 503", status)
	}

	// Logs: one JSON object a line, the request lines with their fields,
	// and no credential anywhere.
	logs := cache.proc.stdout.String() + cache.proc.stderr.String()
	for _, secret := range []string{testPass, good, strings.TrimPrefix(good, "Basic "), token, "dG9rZW4tbmV2ZXItbG9nZ2Vk"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the cache's log holds the credential %q", secret)
		}
	}
	requests := 0
	for _, line := range strings.Split(strings.TrimSpace(cache.proc.stderr.String()), "\n") {
		if stdlibLog.MatchString(line) {
			// net/http's own messages go through the standard library's
			// logger, which log.formatter does not configure.
			t.Logf("not from logrus: %s", line)
			continue
		}
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Errorf("a log line that is not JSON: %q", line)
			continue
		}
		if entry["msg"] == "request" && entry["component"] == "downstream" {
			requests++
			for _, field := range []string{"time", "level", "method", "kind", "result", "status", "bytes", "duration"} {
				if _, ok := entry[field]; !ok {
					t.Errorf("request line without %q: %s", field, line)
				}
			}
		}
	}
	if requests != 5 {
		t.Errorf("%d request lines, want 5 (waitReady's ping and 4 requests)", requests)
	}
}
