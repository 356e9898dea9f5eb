package fill

import (
	"runtime"
	"testing"
)

// Free chunks outlive garbage collections (a sync.Pool is emptied by two),
// so that the next fill reads into memory that is still resident, and no
// more than the list's bound are kept.
func TestFreeChunksSurviveGC(t *testing.T) {
	c := &Fills{}
	c.chunks.max = 2
	a, b, extra := c.newChunk(), c.newChunk(), c.newChunk()
	a.buf = append(a.buf, "dirty"...)
	c.freeChunk(a)
	c.freeChunk(b)
	c.freeChunk(extra) // past the bound: dropped
	runtime.GC()
	runtime.GC()
	got := map[*chunk]bool{c.newChunk(): true, c.newChunk(): true}
	if !got[a] || !got[b] {
		t.Fatal("free chunks were not kept across garbage collections")
	}
	if c.newChunk() == extra {
		t.Fatal("a chunk past the bound was kept")
	}
	if len(a.buf) != 0 || cap(a.buf) != Chunk {
		t.Fatalf("a recycled chunk holds %d bytes of %d", len(a.buf), cap(a.buf))
	}
}
