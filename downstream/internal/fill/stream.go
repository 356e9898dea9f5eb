package fill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/content-cache/content-cache/downstream/internal/store"
)

// ErrFailed is a fill that failed after its reader started sending: all the
// reader can do is cut its response short.
var ErrFailed = errors.New("fill failed")

// Stream sends the fill's bytes [off, end) to w as they arrive (end -1:
// to the end of a blob of unknown size). The last byte of a known size is
// held back until the whole blob is verified, and a failed fill returns
// ErrFailed: a client never sees a complete-looking wrong body. Bytes that
// left the window come from the upload in progress, or from storage once
// committed.
func (f *Fill) Stream(ctx context.Context, w io.Writer, off, end int64) error {
	// A writer that buffers is flushed (FlushError, the method
	// http.ResponseController knows) whenever this reader caught up and
	// waits: net/http holds writes below 4 KiB, and the first upstream read
	// is often the few KiB that came with the headers, which would
	// otherwise wait for the next upstream read.
	var idle func()
	if fl, ok := w.(interface{ FlushError() error }); ok {
		idle = func() { _ = fl.FlushError() }
	}
	for end < 0 || off < end {
		var (
			st     State
			seg    []byte
			ch     *chunk
			behind bool
		)
		err := f.awaitIdle(ctx, &f.changed, func() bool {
			st = f.state
			limit := available(st, end)
			switch {
			case st.Finished && st.Err != nil, st.Finished && off >= limit:
				return true
			case off >= limit:
				return false
			case off < f.base:
				behind = true
				return true
			}
			if seg, ch = f.segmentLocked(off, limit); seg != nil {
				ch.readers++ // not recycled while this sends from it
			}
			return seg != nil
		}, idle)
		if err != nil {
			return err // the client went away
		}
		switch {
		case st.Finished && st.Err != nil:
			return fmt.Errorf("%w: %w", ErrFailed, st.Err)
		case seg != nil:
			// Bytes below Written never change: sent without the lock.
			_, err := w.Write(seg)
			f.doneWith(ch)
			if err != nil {
				return err
			}
			off += int64(len(seg))
		case behind:
			n, err := f.streamBehind(ctx, w, off, end)
			off += n
			if err != nil {
				return err
			}
		default: // unknown size, finished
			return nil
		}
	}
	return nil
}

// available returns how many bytes of the fill may be sent: all received
// bytes, but never the last byte of the response before verification.
func available(s State, end int64) int64 {
	n := s.Written
	if end >= 0 {
		n = min(n, end)
		if !s.Verified && n == end {
			n--
		}
	}
	return n
}

// streamBehind sends bytes from off that left the window: from the upload
// in progress where the driver can read it back (up to where the window
// starts), else from storage once the blob is committed.
func (f *Fill) streamBehind(ctx context.Context, w io.Writer, off, end int64) (int64, error) {
	f.mu.Lock()
	// Up to where the window starts, and never the response's last byte
	// before verification.
	up, limit := f.upload, min(f.base, available(f.state, end))
	f.mu.Unlock()
	if up != nil && f.c.store.Readable() && off < limit {
		rd, err := up.ReadWritten(ctx, off)
		if err == nil {
			defer rd.Close()
			n, err := io.CopyN(w, storageSource(rd, "the upload in progress"), limit-off)
			if err == io.EOF {
				err = fmt.Errorf("%w: the upload in progress ends at byte %d", ErrFailed, off+n)
			}
			return n, err
		}
		if !store.IsNotFound(err) {
			return 0, fmt.Errorf("%w: reading the upload in progress: %w", ErrFailed, err)
		}
		// Moved by the commit meanwhile: from storage, below.
	}
	st, err := f.Wait(ctx, func(s State) bool { return s.Finished })
	if err != nil {
		return 0, err
	}
	if !st.Stored {
		return 0, fmt.Errorf("%w: bytes from %d left the fill's window and were not stored", ErrFailed, off)
	}
	rd, err := f.c.store.Reader(ctx, f.dgst, off)
	if err != nil {
		return 0, fmt.Errorf("%w: reading the stored blob: %w", ErrFailed, err)
	}
	defer rd.Close()
	n := st.Written - off
	if end >= 0 {
		n = end - off
	}
	m, err := io.CopyN(w, storageSource(rd, "the stored blob"), n)
	if err == io.EOF {
		err = fmt.Errorf("%w: the stored blob ends at byte %d", ErrFailed, off+m)
	}
	return m, err
}

// storageSource is what a reader behind the window copies from: a file
// (the filesystem driver's) as it is, so that the response's ReadFrom
// hands it to sendfile (no copy through this process, instead of 32 KiB
// reads and writes); anything else as a storageReader. A file that ends
// early still fails the copy (io.CopyN's EOF, turned into ErrFailed);
// only its rarer read errors are no longer told apart from the client's.
func storageSource(rd io.Reader, what string) io.Reader {
	if f, ok := rd.(*os.File); ok {
		return f
	}
	return storageReader{rd, what}
}

// storageReader marks its failures as the fill's (ErrFailed), so that they
// are told apart from the client's going away in the same copy.
type storageReader struct {
	r    io.Reader
	what string
}

func (s storageReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: reading %s: %w", ErrFailed, s.what, err)
	}
	return n, err
}
