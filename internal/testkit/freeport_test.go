package testkit

import (
	"net"
	"strconv"
	"testing"
)

// FreeAddr's ports are below the kernel's ephemeral range, where no
// outgoing connection takes them before the started process binds them
// (a port the kernel handed out for ":0" is inside it), and free.
func TestFreeAddrBelowTheEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	for range 50 {
		addr := FreeAddr(t)
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		port, err := strconv.Atoi(p)
		if err != nil || port < minPort || port >= lo {
			t.Fatalf("FreeAddr gave %s, want a port in [%d, %d)", addr, minPort, lo)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("FreeAddr gave %s, which cannot be bound: %v", addr, err)
		}
		l.Close()
	}
}
