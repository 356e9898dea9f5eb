// Package logbatch writes a process's log output in batches.
package logbatch

import (
	"io"
	"sync"
)

// Writer writes to its underlying writer, in order, what it is given,
// from a goroutine of its own: a Write appends to a buffer and returns, and
// the goroutine writes everything buffered with one call. The process's
// log output goes through it: one write system call per request line (to
// the pipe of a container runtime, say, waking its reader each time) was a
// sixth of a small hit's CPU (`bench -only warm-load`, 8 × 4 KiB, 64
// clients). There is no timer: an idle process's line is written at once,
// and under load the lines that came while the last write ran go out
// together. Writes block, as on a full pipe, while maxPending bytes wait.
// A line is lost only if the process dies between its Write and the
// goroutine's (Close writes what is left).
type Writer struct {
	w io.Writer

	mu      sync.Mutex
	drained sync.Cond // pending written (for Close and back-pressure)
	pending []byte
	spare   []byte
	writing bool // the goroutine holds a batch
	closed  bool

	kick chan struct{} // capacity 1: a batch is waiting
	done chan struct{} // closed when the goroutine has returned
}

// maxPending bounds the bytes waiting to be written; keepBuffer bounds the
// buffers kept between batches.
const (
	maxPending = 1 << 20
	keepBuffer = 64 << 10
)

// New starts writing to w. Close stops it.
func New(w io.Writer) *Writer {
	b := &Writer{w: w, kick: make(chan struct{}, 1), done: make(chan struct{})}
	b.drained.L = &b.mu
	go b.run()
	return b
}

// Write queues p (copied) and returns len(p): a failed write of the
// underlying writer fails nothing, as a failed log write in logrus. After
// Close, p is written at once.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	for {
		if b.closed {
			// After the goroutine's last batches, in order.
			for b.writing || len(b.pending) > 0 {
				b.drained.Wait()
			}
			defer b.mu.Unlock()
			return b.w.Write(p)
		}
		if len(b.pending) < maxPending {
			break
		}
		b.drained.Wait()
	}
	b.pending = append(b.pending, p...)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default: // a batch is already due
	}
	return len(p), nil
}

// run writes the batches until Close.
func (b *Writer) run() {
	defer close(b.done)
	for range b.kick {
		b.mu.Lock()
		batch := b.pending
		b.pending, b.spare = b.spare[:0], nil
		b.writing = true
		b.mu.Unlock()
		if len(batch) > 0 {
			_, _ = b.w.Write(batch)
		}
		b.mu.Lock()
		if cap(batch) <= keepBuffer {
			b.spare = batch[:0]
		}
		b.writing = false
		closed := b.closed && len(b.pending) == 0
		b.drained.Broadcast()
		b.mu.Unlock()
		if closed {
			return
		}
	}
}

// Unwrap is the underlying writer.
func (b *Writer) Unwrap() io.Writer { return b.w }

// Close writes what is pending and stops the goroutine; later writes go
// to the underlying writer directly.
func (b *Writer) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.done
		return nil
	}
	b.closed = true
	b.drained.Broadcast() // blocked writers write directly now
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	<-b.done
	return nil
}
