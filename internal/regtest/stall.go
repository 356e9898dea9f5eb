package regtest

import (
	"net"
	"net/http"
	"syscall"
	"time"
)

// SlowReaderClient is an HTTP client whose connections have a small,
// fixed receive buffer (64 KiB). A test that reads part of a large body
// and then stops keeps the server's response in flight: with the kernel's
// receive autotuning (tcp_rmem's maximum is 32 MiB on some machines) a
// 16 MiB body fits in the socket buffers, the handler returns, and what it
// held (an in-use hold, a lease) is released while the client has not read
// the body.
func SlowReaderClient() *http.Client {
	d := &net.Dialer{
		Timeout: 30 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				// Setting SO_RCVBUF turns autotuning off for the socket.
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
			})
			if err != nil {
				return err
			}
			return serr
		},
	}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableCompression: true}}
}
