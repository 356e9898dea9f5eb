//go:build !linux

package conformance

import "testing"

// dockerEngine: dockerd is tested on Linux only.
type dockerEngine struct{ host string }

func startDockerd(t *testing.T) *dockerEngine {
	t.Skip("the dockerd client test needs Linux")
	return nil
}

func startDockerdMirrors(t *testing.T, _ ...string) *dockerEngine {
	t.Skip("the dockerd client test needs Linux")
	return nil
}
