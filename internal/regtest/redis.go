package regtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Redis is a redis-server (Debian's package) a test started on a free
// loopback port, with no persistence, in a directory of its own. Kill,
// Stop, Cont and Restart act on the real process; Restart keeps the
// address, so that replicas configured with it reconnect.
type Redis struct {
	Addr string // 127.0.0.1:PORT
	Dir  string
	Proc *Process // the running (or last) process

	t   testing.TB
	bin string
}

// StartRedis starts redis-server and waits until it answers PING. Without
// redis-server the test is skipped, or fails when CI is set.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{Addr: FreeAddr(t), Dir: t.TempDir(), t: t, bin: Tool(t, "redis-server", "bin/redis-server")}
	r.start()
	return r
}

func (r *Redis) start() {
	r.t.Helper()
	args, err := RedisArgs(r.Addr, r.Dir)
	if err != nil {
		r.t.Fatal(err)
	}
	r.Proc = StartProcess(r.t, "redis-server", nil, r.bin, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Poll(ctx, r.Ping, r.Proc); err != nil {
		r.t.Fatalf("redis-server on %s: %v", r.Addr, err)
	}
}

// RedisArgs are redis-server's arguments for a server on addr (host:port)
// in dir: in the foreground, logging to stdout, and with nothing kept
// across a restart (a restarted Redis is an empty one, the worst case
// replicas must survive). The bench runs redis-server with them too.
func RedisArgs(addr, dir string) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	return []string{"--bind", host, "--port", port, "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""}, nil
}

// Kill SIGKILLs redis-server.
func (r *Redis) Kill() { r.Proc.Kill() }

// Stop freezes redis-server (SIGSTOP): connections stay open, nothing
// answers.
func (r *Redis) Stop() error { return r.Proc.Stop() }

// Cont resumes it (SIGCONT).
func (r *Redis) Cont() error { return r.Proc.Cont() }

// Restart kills redis-server if it runs, starts a new, empty one on the
// same address and waits until it answers.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Proc.Kill()
	r.start()
}

// Ping sends PING and expects PONG.
func (r *Redis) Ping(ctx context.Context) error {
	reply, err := r.Do(ctx, "PING")
	if err != nil {
		return err
	}
	if reply != "PONG" {
		return fmt.Errorf("redis %s: PING answered %q", r.Addr, reply)
	}
	return nil
}

// Do sends one command and returns its reply when it is a simple string,
// an integer or a bulk string (nil bulk: ""); an error reply is an error.
// Enough for tests to look at keys without a client library.
func (r *Redis) Do(ctx context.Context, args ...string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("redis %s: empty reply", r.Addr)
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis %s: %s", r.Addr, line[1:])
	case '$':
		var n int
		if _, err := fmt.Sscanf(line[1:], "%d", &n); err != nil {
			return "", fmt.Errorf("redis %s: bad bulk header %q", r.Addr, line)
		}
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("redis %s: unsupported reply %q", r.Addr, line)
}
