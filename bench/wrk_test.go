package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out := "Running 5s test @ http://127.0.0.1:1/\n  2 threads and 16 connections\nwrk-result requests=120 bytes=8053063680 duration_us=5002113 errors=0 status=2\nRequests/sec: 23.99\n"
	r, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if r.requests != 120 || r.bytes != 8053063680 || r.duration != 5002113*time.Microsecond || r.errors != 0 || r.status != 2 {
		t.Fatalf("parsed %+v", r)
	}
}

func TestParseWrkErrors(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"Requests/sec: 1\n", "no wrk-result line"},
		{"wrk-result requests=1 bytes=2 duration_us=3 errors=0\n", "want 5 fields, got 4"},
		{"wrk-result requests=x bytes=2 duration_us=3 errors=0 status=0\n", "requests is not a number"},
		{"wrk-result requests=1 bytes=2 duration_us=0 errors=0 status=0\n", "no duration"},
	} {
		_, err := parseWrk(tc.out)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseWrk(%q) = %v, want an error with %q", tc.out, err, tc.want)
		}
	}
}

func TestWrkScriptRotatesPaths(t *testing.T) {
	s := wrkScript([]string{"/v2/a/blobs/sha256:1", `/v2/b"/blobs/x`})
	for _, want := range []string{`"/v2/a/blobs/sha256:1", "/v2/b\"/blobs/x"`, "function done(", "wrk-result requests=%d"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}

func TestNginxConfigServesBlobFiles(t *testing.T) {
	c := nginxConfig("/w", "/root", "81", "444", &tlsFiles{cert: "/c.pem", key: "/k.pem"})
	for _, want := range []string{"sendfile on;", "listen 0.0.0.0:81;", "listen 0.0.0.0:444 ssl;", "ssl_certificate /c.pem;",
		"alias /root/docker/registry/v2/blobs/sha256/$2/$1/data;", "access_log off;"} {
		if !strings.Contains(c, want) {
			t.Errorf("config lacks %q", want)
		}
	}
}
