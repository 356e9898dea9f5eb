package regtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/content-cache/content-cache/internal/testkit"
)

// Process is a child process a test started (redis-server, haproxy, a
// content-cache replica), which the test can signal by PID: SIGKILL,
// SIGSTOP and SIGCONT are real. It runs in a process group of its own and
// dies with the test binary (Pdeathsig); the test's cleanup kills what is
// still running.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	Out  *Buffer // stdout and stderr, interleaved

	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, set before done closes
}

// StartProcess runs bin with args (env added to the test's environment)
// until the test ends. Its output is logged if the test fails.
func StartProcess(t testing.TB, name string, env []string, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Out: &Buffer{}, done: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s (pid %d) %s output:\n%s", name, p.PID(), strings.Join(args, " "), tail(p.Out.String(), 64<<10))
		}
	})
	return p
}

// PID is the process's id.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited, and how (Wait's error;
// nil for exit status 0).
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig syscall.Signal) error {
	if done, _ := p.Exited(); done {
		return fmt.Errorf("%s (pid %d) has exited", p.Name, p.PID())
	}
	return syscall.Kill(p.PID(), sig)
}

// Kill sends SIGKILL to the process group and waits for the exit: what a
// crash, or the OOM killer, does. A no-op once the process has exited.
func (p *Process) Kill() {
	if done, _ := p.Exited(); done {
		return
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	<-p.done
}

// Stop freezes the process (SIGSTOP): it holds its sockets but answers
// nothing, as a stalled or paused replica does.
func (p *Process) Stop() error { return p.Signal(syscall.SIGSTOP) }

// Cont resumes a stopped process (SIGCONT).
func (p *Process) Cont() error { return p.Signal(syscall.SIGCONT) }

// Terminate sends SIGTERM and waits for the process to exit, or for ctx
// to end (the process is then left running). It returns the exit status
// (nil for 0).
func (p *Process) Terminate(ctx context.Context) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	return p.Wait(ctx)
}

// Wait waits for the process to exit, or for ctx to end, and returns its
// exit status (nil for 0).
func (p *Process) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return fmt.Errorf("%s (pid %d) still running: %w", p.Name, p.PID(), ctx.Err())
	}
}

// PollInterval is how often the Wait* functions of this package check
// their condition.
const PollInterval = 20 * time.Millisecond

// Poll calls cond every PollInterval until it returns nil, ctx ends (the
// last error is returned with ctx's), or one of the processes exits.
func Poll(ctx context.Context, cond func(context.Context) error, watch ...*Process) error {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		for _, p := range watch {
			if done, exit := p.Exited(); done {
				return fmt.Errorf("%s (pid %d) exited (%v) while waiting: %w", p.Name, p.PID(), exit, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// WaitListening waits until addr accepts TCP connections.
func WaitListening(ctx context.Context, addr string, watch ...*Process) error {
	return Poll(ctx, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}, watch...)
}

// WaitStatus waits until GET url answers want.
func WaitStatus(ctx context.Context, client *http.Client, url string, want int, watch ...*Process) error {
	return Poll(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		drain(resp)
		if resp.StatusCode != want {
			return fmt.Errorf("GET %s: %s, want %d", url, resp.Status, want)
		}
		return nil
	}, watch...)
}

// FreeAddr returns a loopback address with a port nobody listens on now
// (testkit.FreeAddr).
func FreeAddr(t testing.TB) string { return testkit.FreeAddr(t) }

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}
