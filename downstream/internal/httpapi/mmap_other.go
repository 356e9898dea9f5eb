//go:build !linux

package httpapi

import (
	"io"
	"os"
)

// copyMapped copies through a buffer where the mapping is not
// implemented (it is, and measured, on Linux only).
func copyMapped(w io.Writer, f *os.File, n int64) (int64, error) {
	return io.CopyBuffer(writerOnly{w}, io.LimitReader(f, n), make([]byte, min(copyBufferSize, max(n, 1))))
}
