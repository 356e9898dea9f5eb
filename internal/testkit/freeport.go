package testkit

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"testing"
)

// FreeAddr returns a loopback address whose port nobody listens on now,
// for a process the test starts next. The port is below the kernel's
// ephemeral range (/proc/sys/net/ipv4/ip_local_port_range): a port the
// kernel handed out for ":0" was also free for any process's outgoing
// connection to take as its local port before the started process bound
// it, and a cache's debug server then failed with "address already in
// use" (TestMonitoringNamesExist in CI). Below the range only another
// test's pick can take it, one port in thousands.
func FreeAddr(t testing.TB) string {
	t.Helper()
	lo := ephemeralLow()
	for range 100 {
		addr := fmt.Sprintf("127.0.0.1:%d", minPort+rand.IntN(lo-minPort))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr
	}
	t.Fatalf("no free loopback port in [%d, %d) after 100 tries", minPort, lo)
	return ""
}

// minPort is the lowest port FreeAddr picks: above the well-known and the
// common service ports.
const minPort = 10000

// ephemeralLow is the start of the kernel's ephemeral port range (32768
// when it cannot be read, Linux's default).
func ephemeralLow() int {
	var lo, hi int
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		_, err = fmt.Sscan(string(b), &lo, &hi)
	}
	if err != nil || lo <= minPort+1000 {
		return 32768
	}
	return lo
}
