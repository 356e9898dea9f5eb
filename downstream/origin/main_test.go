package origin

import (
	"os"
	"testing"

	"github.com/content-cache/content-cache/internal/regtest"
)

func TestMain(m *testing.M) {
	regtest.QuietLogs()
	os.Exit(m.Run())
}
