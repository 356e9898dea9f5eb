package httpapi

import (
	"cmp"
	"errors"
	"io"
	"os"
	"runtime/debug"
	"syscall"
)

// mapWindow bounds each mapping of copyMapped (and so each write). A
// mapped page counts in the process's RSS until it is unmapped, so a 4 GiB
// hit mapped whole would show 4 GiB of RSS; windows keep it to one window
// per hit. 1 MiB and 4 MiB windows gave the same warm throughput (`bench
// -only blob`, 4 MiB / 1 MiB 0.95-1.07x), 16 MiB less: the smaller is kept.
const mapWindow = 1 << 20

// errTruncated is a stored file shorter than the bytes a response
// promised: it was cut while (or before) being served.
var errTruncated = errors.New("stored blob truncated while being served")

// copyMapped writes n bytes of f from its current offset to w straight
// from a read-only mapping of the file, window by window: one copy in user
// space fewer than read then write, and the socket's pages are still in
// the CPU's cache when the client on loopback copies them out.
//
// A file cut under the mapping raises SIGBUS at the first page past its
// end: with SetPanicOnFault on (for this goroutine only) that is a panic,
// recovered here into an error, and the caller aborts the response. So w
// must copy p in this goroutine (HTTP/1's writer does; HTTP/2's hands p to
// its connection's goroutine, where a fault would kill the process). The
// part of the file's last page after its new end reads as zeros, not a
// fault: so the last page of the range is read with pread, which a cut
// makes short, and a response can never end complete with zeros in it.
func copyMapped(w io.Writer, f *os.File, n int64) (written int64, err error) {
	if n <= 0 {
		return 0, nil
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, err
	}
	page := int64(os.Getpagesize())
	last := max(off, (off+n-1)&^(page-1)) // the last page of the range, read with pread
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			if _, fault := p.(interface{ Addr() uintptr }); !fault {
				panic(p)
			}
			err = errTruncated
		}
	}()
	for pos := off; pos < last; {
		start := pos &^ (page - 1)
		end := min(start+mapWindow, last)
		m, err := writeWindow(w, f, start, end, pos)
		written += m
		if err != nil {
			return written, err
		}
		pos = end
	}
	tail := make([]byte, off+n-last)
	if k, _ := f.ReadAt(tail, last); k < len(tail) {
		return written, errTruncated
	}
	m, err := w.Write(tail)
	return written + int64(m), err
}

// writeWindow maps [start, end) of f and writes it from pos on; the
// mapping is gone when it returns, also when w faults on it.
func writeWindow(w io.Writer, f *os.File, start, end, pos int64) (int64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var m []byte
	cerr := rc.Control(func(fd uintptr) {
		m, err = syscall.Mmap(int(fd), start, int(end-start), syscall.PROT_READ, syscall.MAP_SHARED)
	})
	if err = cmp.Or(cerr, err); err != nil {
		return 0, err
	}
	defer syscall.Munmap(m) //nolint:errcheck // nothing to do about a failed unmap
	k, err := w.Write(m[pos-start:])
	return int64(k), err
}
