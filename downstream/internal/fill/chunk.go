package fill

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

// newChunk is an empty chunk, recycled if one is free.
func (c *Fills) newChunk() *chunk {
	if ch, ok := c.chunks.Get().(*chunk); ok {
		return ch
	}
	return &chunk{buf: make([]byte, 0, Chunk)}
}

// freeChunk recycles ch, which nobody sends from any more.
func (c *Fills) freeChunk(ch *chunk) {
	*ch = chunk{buf: ch.buf[:0]}
	c.chunks.Put(ch)
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
