//go:build !linux

package conformance

import "testing"

// startContainerd: containerd's ctr is tested on Linux only.
func startContainerd(t *testing.T) string {
	t.Skip("the ctr client test needs Linux")
	return ""
}
