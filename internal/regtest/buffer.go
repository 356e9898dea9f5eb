package regtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
)

// Buffer is a bytes.Buffer safe for concurrent writers and a reader: a
// process's stdout and stderr, or a captured log.
type Buffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced on every write; nil until waited on
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written != nil {
		close(l.written)
		l.written = nil
	}
	return l.b.Write(p)
}

// WaitFor blocks until a line written holds every one of parts, and
// returns that line; or until ctx ends.
func (l *Buffer) WaitFor(ctx context.Context, parts ...string) (string, error) {
	for {
		l.mu.Lock()
		text := l.b.String()
		if l.written == nil {
			l.written = make(chan struct{})
		}
		ch := l.written
		l.mu.Unlock()
	lines:
		for line := range strings.Lines(text) {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return line, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("no line with %q: %w", parts, ctx.Err())
		}
	}
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
