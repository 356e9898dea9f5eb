package downstream_test

import (
	"io"
	"os"
	"testing"

	"github.com/sirupsen/logrus"
)

// TestMain quiets the registries' logs; CONTENT_CACHE_TEST_LOG=1 shows them.
func TestMain(m *testing.M) {
	if os.Getenv("CONTENT_CACHE_TEST_LOG") == "" {
		logrus.SetOutput(io.Discard)
	}
	os.Exit(m.Run())
}
