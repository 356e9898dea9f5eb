package downstream_test

import (
	"os"
	"testing"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestMain quiets the registries' logs; CONTENT_CACHE_TEST_LOG=1 shows them.
func TestMain(m *testing.M) {
	regtest.QuietLogs()
	os.Exit(m.Run())
}
