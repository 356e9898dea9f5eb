package regtest

import (
	"testing"

	"github.com/content-cache/content-cache/internal/testkit"
)

// Clock is a clock tests move by hand (testkit.Clock).
type Clock = testkit.Clock

// CA is a test certificate authority (testkit.CA).
type CA = testkit.CA

// NewCA makes a CA and writes its certificate into t.TempDir().
func NewCA(t testing.TB) *CA { return testkit.NewCA(t) }
