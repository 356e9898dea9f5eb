package httpapi

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkCopyToLoopback writes a file of each size to a loopback TCP
// connection (drained by a reader of 256 KiB, as the bench client reads)
// from the mapping (copyMapped) and through copyBlob's buffer: where the
// mapping's mmap, faults and munmap cost more than the copy they save.
func BenchmarkCopyToLoopback(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 256<<10)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for _, size := range []int64{16 << 10, 32 << 10, 64 << 10, 256 << 10, 1 << 20, 64 << 20} {
		name := filepath.Join(b.TempDir(), "data")
		if err := os.WriteFile(name, make([]byte, size), 0o644); err != nil {
			b.Fatal(err)
		}
		for _, way := range []string{"mapped", "buffered"} {
			b.Run(fmt.Sprintf("%s/%dKiB", way, size>>10), func(b *testing.B) {
				b.SetBytes(size)
				for b.Loop() {
					f, err := os.Open(name)
					if err != nil {
						b.Fatal(err)
					}
					var n int64
					if way == "mapped" {
						n, err = copyMapped(conn, f, size)
					} else {
						n, err = io.CopyBuffer(writerOnly{conn}, io.LimitReader(f, size), make([]byte, min(copyBufferSize, size)))
					}
					f.Close()
					if n != size || err != nil {
						b.Fatal(n, err)
					}
				}
			})
		}
	}
}
