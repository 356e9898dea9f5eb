package regtest

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	QuietLogs()
	code := m.Run()
	RemoveBuiltBinary()
	os.Exit(code)
}

// TestCluster starts the harness the replica tests use: two replicas of
// the binary on one directory behind haproxy, and Redis; pulls through
// haproxy; and kills, stops and restarts the parts by PID.
func TestCluster(t *testing.T) {
	ContentCacheBinary(t) // built before the clock starts
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	origin := StartOrigin(t, nil)
	img := RandomImage(21, 2, 256<<10)
	if err := Push(ctx, origin.URL, "", "", img); err != nil {
		t.Fatal(err)
	}
	redis := StartRedis(t)
	c := StartCluster(t, ClusterOptions{Replicas: 2, Storage: Filesystem(t), Upstream: origin.URL})

	pull := func(base string) {
		t.Helper()
		cl := &Client{Base: base}
		if n, err := cl.Pull(ctx, img.Repo, img.Tag); err != nil || n != int64(len(img.Config)+2*(256<<10)) {
			t.Fatalf("pull through %s: %d bytes, %v", base, n, err)
		}
	}
	// Round-robin: two pulls touch both replicas.
	pull(c.URL())
	pull(c.URL())
	for _, r := range c.Replicas {
		v, err := r.Metric(ctx, "content_cache_requests_total")
		if err != nil {
			t.Fatal(err)
		}
		if v == 0 {
			t.Errorf("replica %d served no request: haproxy did not spread the pulls", r.Index)
		}
	}

	// A killed replica leaves haproxy's rotation; the other serves.
	c.Replicas[0].Kill()
	if err := c.LB.WaitState(ctx, "DOWN", "r0"); err != nil {
		t.Fatal(err)
	}
	pull(c.URL())
	c.Replicas[0].Start()
	if err := c.Replicas[0].WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.LB.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}
	// A restart drains and exits 0.
	if err := c.Replicas[1].Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	pull(c.Replicas[1].URL)

	// A stopped replica holds its port and answers nothing.
	if err := c.Replicas[1].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.LB.WaitState(ctx, "DOWN", "r1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Replicas[1].Cont(); err != nil {
		t.Fatal(err)
	}
	if err := c.LB.WaitUp(ctx); err != nil {
		t.Fatal(err)
	}

	// Redis: killed, it answers nothing; restarted, it is empty.
	if _, err := redis.Do(ctx, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	redis.Kill()
	if err := redis.Ping(ctx); err == nil {
		t.Fatal("PING answered after SIGKILL")
	}
	redis.Restart()
	if v, err := redis.Do(ctx, "GET", "k"); err != nil || v != "" {
		t.Fatalf("GET k after a restart: %q %v, want nothing", v, err)
	}
}
