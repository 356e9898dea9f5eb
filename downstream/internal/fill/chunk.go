package fill

import "sync"

// chunk is a piece of a fill's window: Chunk bytes of capacity, filled
// from the upstream in order. Chunks are recycled, since allocating and
// zeroing 256 KiB per chunk, and collecting it, cost a tenth of a fill's
// CPU.
type chunk struct {
	buf []byte // len: the bytes received into it
	// readers send from buf outside the fill's lock; a chunk dropped from
	// the window meanwhile is recycled by the last of them.
	readers int
	dropped bool
}

func (ch *chunk) full() bool { return len(ch.buf) == Chunk }

// chunkList is the free chunks of finished fills' windows. Not a
// sync.Pool: a pool is emptied by every garbage collection, and the
// runtime's scavenger gives the freed pages back to the OS, so that each
// cold fill allocated its window anew and faulted every page of it back in
// inside its socket reads (with the scavenger's madvise, a fifth of the
// CPU of a cold 8 MiB pull). Chunks kept here stay resident.
type chunkList struct {
	max  int // how many are kept at most
	mu   sync.Mutex
	free []*chunk
}

// newChunk is an empty chunk, recycled if one is free.
func (c *Fills) newChunk() *chunk {
	l := &c.chunks
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.free); n > 0 {
		ch := l.free[n-1]
		l.free[n-1] = nil
		l.free = l.free[:n-1]
		return ch
	}
	return &chunk{buf: make([]byte, 0, Chunk)}
}

// freeChunk recycles ch, which nobody sends from any more.
func (c *Fills) freeChunk(ch *chunk) {
	*ch = chunk{buf: ch.buf[:0]}
	l := &c.chunks
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.free) < l.max {
		l.free = append(l.free, ch)
	}
}

// doneWith ends a reader's use of ch, recycling it if it was dropped from
// the window meanwhile.
func (f *Fill) doneWith(ch *chunk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch.readers--
	if ch.dropped && ch.readers == 0 {
		f.c.freeChunk(ch)
	}
}
