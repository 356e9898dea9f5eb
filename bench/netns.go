package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netPair is two network namespaces the harness made, joined by a veth
// pair: the servers run in srv, a client crosses the veth from cli (a path
// through the network stack like a real NIC's, unlike loopback). Nothing is
// added to the harness's own namespace.
type netPair struct {
	srv, cli     string // namespace names (ip netns)
	srvIP, cliIP string // the veth ends' addresses
}

// newNetPair makes the two namespaces (names unique to this process), the
// veth pair and their addresses, and brings loopback up in both.
func newNetPair(ctx context.Context) (*netPair, error) {
	id := os.Getpid() % 100000
	n := &netPair{srv: fmt.Sprintf("ccbench-%d-srv", id), cli: fmt.Sprintf("ccbench-%d-cli", id), srvIP: "10.213.0.1", cliIP: "10.213.0.2"}
	vs, vc := fmt.Sprintf("ccb%ds", id), fmt.Sprintf("ccb%dc", id)
	steps := [][]string{
		{"netns", "add", n.srv},
		{"netns", "add", n.cli},
		{"link", "add", vs, "netns", n.srv, "type", "veth", "peer", "name", vc, "netns", n.cli},
		{"-n", n.srv, "addr", "add", n.srvIP + "/30", "dev", vs},
		{"-n", n.cli, "addr", "add", n.cliIP + "/30", "dev", vc},
		{"-n", n.srv, "link", "set", vs, "up"},
		{"-n", n.cli, "link", "set", vc, "up"},
		{"-n", n.srv, "link", "set", "lo", "up"},
		{"-n", n.cli, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if out, err := exec.CommandContext(ctx, "ip", s...).CombinedOutput(); err != nil {
			n.close()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return n, nil
}

// close deletes both namespaces (and with them the veth pair).
func (n *netPair) close() {
	for _, ns := range []string{n.srv, n.cli} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
}

// client is an HTTP client whose connections are made inside namespace ns.
func nsClient(ns string) *http.Client {
	c := newHTTPClient()
	c.Transport.(*http.Transport).DialContext = dialIn(ns)
	return c
}

// dialIn dials from inside namespace ns: on a thread of its own that enters
// ns, dials, and goes back to its namespace before it is handed back to the
// runtime. A socket belongs to the namespace it was made in, whichever
// thread uses it later. (A thread that exited instead would kill the
// processes forked from it: they are started with Pdeathsig.)
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer home.Close()
			f, err := os.Open("/var/run/netns/" + ns)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, fmt.Errorf("setns %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if unix.Setns(int(home.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread() // back home: the runtime may reuse it
			} // else the thread stays locked and ends with the goroutine
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
