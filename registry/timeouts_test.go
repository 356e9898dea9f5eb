package registry_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestClientTimeouts runs the binary with short client timeouts: a
// connection that trickles its headers, and a kept-alive connection left
// idle, are closed by the cache after their timeout, while a client that
// is slow but within the timeout is served.
func TestClientTimeouts(t *testing.T) {
	const header, idle = 500 * time.Millisecond, time.Second
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(up.Close)
	addr := freeAddr(t)
	config := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
middleware:
  registry:
    - name: downstream
      options:
        upstreams: [%s]
        clientheadertimeout: %s
        clientidletimeout: %s
`, t.TempDir(), addr, up.URL, header, idle)
	path := filepath.Join(t.TempDir(), "cache.yml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "cache", childEnv("OTEL_TRACES_EXPORTER=none"), "serve", path)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	waitReady(t, p, client, "http://"+addr)

	dial := func(t *testing.T) net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	// closedWithin reads until the server closes the connection and returns
	// how long that took from since; a read deadline, not a sleep, bounds
	// the wait.
	closedWithin := func(t *testing.T, conn net.Conn, r io.Reader, since time.Time, limit time.Duration) time.Duration {
		t.Helper()
		if err := conn.SetReadDeadline(since.Add(limit)); err != nil {
			t.Fatal(err)
		}
		_, err := io.Copy(io.Discard, r)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection is still open after %v", limit)
		}
		return time.Since(since)
	}

	t.Run("trickled headers", func(t *testing.T) {
		conn := dial(t)
		begin := time.Now()
		if _, err := io.WriteString(conn, "GET /v2/ HTTP/1.1\r\nHost: cache\r\nX-Slow: "); err != nil {
			t.Fatal(err)
		}
		// One byte every 50 ms, never the end of the headers.
		go func() {
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for range tick.C {
				if _, err := conn.Write([]byte("a")); err != nil {
					return
				}
			}
		}()
		took := closedWithin(t, conn, conn, begin, 10*time.Second)
		if took < header {
			t.Fatalf("closed after %v, before clientheadertimeout (%v)", took, header)
		}
		t.Logf("closed after %v (clientheadertimeout %v)", took, header)
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn := dial(t)
		if _, err := io.WriteString(conn, "GET /v2/ HTTP/1.1\r\nHost: cache\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatal("the server closed the connection after the response; nothing to test")
		}
		begin := time.Now()
		took := closedWithin(t, conn, br, begin, 10*time.Second)
		if took < idle-100*time.Millisecond {
			t.Fatalf("closed after %v, before clientidletimeout (%v)", took, idle)
		}
		t.Logf("closed after %v (clientidletimeout %v)", took, idle)
	})

	t.Run("slow but within the timeout", func(t *testing.T) {
		conn := dial(t)
		tick := time.NewTicker(header / 10)
		defer tick.Stop()
		for _, part := range []string{"GET /v2/ HTTP/1.1\r\n", "Host: cache\r\n", "X-Slow: a\r\n", "\r\n"} {
			<-tick.C
			if _, err := io.WriteString(conn, part); err != nil {
				t.Fatal(err)
			}
		}
		if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("a client sending its headers within clientheadertimeout got no answer: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200 (the upstream's answer to /v2/)", resp.StatusCode)
		}
	})
}
