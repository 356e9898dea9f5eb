package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/internal/testkit"
)

// redisServer is a redis-server the test started, on a loopback port.
type redisServer struct {
	Addr string
	cmd  *exec.Cmd
	done chan error
}

// startRedis runs redis-server (Debian's; .ci/run installs it) without
// persistence until the test ends. Without it the test is skipped, or
// fails when CI is set.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found on PATH")
		}
		t.Skip("redis-server not found on PATH (apt-get install redis-server)")
	}
	addr := testkit.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	s := &redisServer{Addr: addr, done: make(chan error, 1)}
	s.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	var out strings.Builder
	s.cmd.Stdout, s.cmd.Stderr = &out, &out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
	})
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(t.Context()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server did not answer on %s:\n%s", addr, out.String())
		}
		select {
		case err := <-s.done:
			t.Fatalf("redis-server exited: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s
}

var prefixes atomic.Int64

// newTestRedis is a Redis client of s under a key prefix of its own.
func newTestRedis(t *testing.T, s *redisServer) *Redis {
	t.Helper()
	r := NewRedis(&config.Redis{Addr: s.Addr, KeyPrefix: fmt.Sprintf("test%d/", prefixes.Add(1))}, RedisOptions{})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestRedisConformance(t *testing.T) {
	s := startRedis(t)
	var cur *Redis // the replicas of a subtest share its prefix
	runConformance(t, impl{
		leases: func(t *testing.T) Leases { cur = newTestRedis(t, s); return cur.Leases() },
		inUse: func(t *testing.T, replica int) InUse {
			if replica == 0 {
				cur = newTestRedis(t, s)
			}
			// Each replica its own client, on the same prefix.
			r := NewRedis(&config.Redis{Addr: s.Addr, KeyPrefix: cur.prefix}, RedisOptions{})
			t.Cleanup(func() { _ = r.Close() })
			return r.InUse(t.Context(), fmt.Sprintf("replica-%d", replica), 3*time.Second)
		},
		pulls: func(t *testing.T) PullIndex { cur = newTestRedis(t, s); return cur.Pulls() },
		sizes: func(t *testing.T, replica int) Sizes {
			if replica == 0 {
				cur = newTestRedis(t, s)
				return cur.Sizes()
			}
			r := NewRedis(&config.Redis{Addr: s.Addr, KeyPrefix: cur.prefix}, RedisOptions{})
			t.Cleanup(func() { _ = r.Close() })
			return r.Sizes()
		},
		expire: func(t *testing.T, _ time.Duration) {
			// Every lease of the subtest expires now.
			ctx := t.Context()
			keys, err := cur.c.Keys(ctx, cur.prefix+"lease/*").Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				cur.c.PExpire(ctx, k, time.Millisecond)
			}
			for len(keys) > 0 {
				n, err := cur.c.Exists(ctx, keys...).Result()
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
		},
		cluster: true,
	})
}

// TestRedisDownAndBack: while Redis is gone, calls fail fast and Up is
// false; holds still work (this replica's own); once Redis is back the
// probe brings cluster mode back by itself.
func TestRedisDownAndBack(t *testing.T) {
	s := startRedis(t)
	var states []bool
	stateCh := make(chan bool, 4)
	errs := atomic.Int64{}
	r := NewRedis(&config.Redis{Addr: s.Addr, KeyPrefix: "down/"}, RedisOptions{
		OnError: func() { errs.Add(1) },
		OnState: func(up bool) { stateCh <- up },
		Probe:   50 * time.Millisecond,
	})
	t.Cleanup(func() { _ = r.Close() })
	ctx := t.Context()
	u := r.InUse(ctx, "a", 3*time.Second)
	if _, ok, err := r.Leases().Acquire(ctx, "k", "a", time.Minute); !ok || err != nil {
		t.Fatal(ok, err)
	}
	// Stop Redis (SIGSTOP: it does not answer, as a partition).
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := r.Leases().Acquire(ctx, "k2", "a", time.Minute); err == nil {
		t.Fatal("Acquire succeeded with Redis stopped")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a call to a stopped Redis took %s", d)
	}
	states = append(states, <-stateCh)
	if r.Up() || errs.Load() == 0 {
		t.Fatalf("Up = %v, errors %d after a failure", r.Up(), errs.Load())
	}
	// Holds go on, this replica's only, at once.
	start = time.Now()
	release, err := u.Hold(ctx, digest.FromString("a"))
	if err != nil {
		t.Fatalf("Hold with Redis down: %v", err)
	}
	release()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("Hold with Redis down took %s", d)
	}
	// Nothing is removed while Redis cannot say what the others hold.
	if ok, _ := u.BeginRemoval(ctx, digest.FromString("b")); ok {
		t.Fatal("removal began with Redis down")
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	states = append(states, <-stateCh)
	if fmt.Sprint(states) != "[false true]" || !r.Up() {
		t.Fatalf("states %v, Up %v; want [false true] and up", states, r.Up())
	}
	if _, ok, err := r.Leases().Acquire(context.Background(), "k3", "a", time.Minute); !ok || err != nil {
		t.Fatalf("Acquire after Redis came back: %v %v", ok, err)
	}
}
