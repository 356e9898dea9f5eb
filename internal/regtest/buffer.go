package regtest

import (
	"bytes"
	"io"
	"os"
	"sync"

	"github.com/sirupsen/logrus"
)

// Buffer is a bytes.Buffer safe for concurrent writers and a reader: a
// process's stdout and stderr, or a captured log.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Bytes returns a copy of everything written so far.
func (l *Buffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// QuietLogs silences the in-process registries' logs for a test binary,
// unless CONTENT_CACHE_TEST_LOG is set. Call it from TestMain.
func QuietLogs() {
	if os.Getenv("CONTENT_CACHE_TEST_LOG") == "" {
		logrus.SetOutput(io.Discard)
	}
}
