package logbatch

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
)

// gateWriter records the writes it gets; while hold is set, each write
// waits for a receive on release.
type gateWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	hold    bool
	release chan struct{}
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	hold := g.hold
	g.mu.Unlock()
	if hold {
		<-g.release
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writes++
	return g.buf.Write(p)
}

func (g *gateWriter) snapshot() (string, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String(), g.writes
}

// Every line written by concurrent writers arrives once, whole, and in
// each writer's order.
func TestBatchWriterKeepsEveryLineInOrder(t *testing.T) {
	g := &gateWriter{}
	b := New(g)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(b, "w%d line %d\n", w, i)
			}
		})
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ := g.snapshot()
	next := make([]int, writers)
	n := 0
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var w, i int
		if _, err := fmt.Sscanf(l, "w%d line %d", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("line %q: not a whole line", l)
		}
		if i != next[w] {
			t.Fatalf("writer %d: line %d after line %d", w, i, next[w]-1)
		}
		next[w]++
		n++
	}
	if n != writers*lines {
		t.Fatalf("%d lines arrived, want %d", n, writers*lines)
	}
}

// Lines that come while a write is under way go out together in the next
// one: one write for many lines, not one per line. An idle writer's line
// goes out at once (no timer).
func TestBatchWriterBatchesWhileAWriteRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gateWriter{hold: true, release: make(chan struct{})}
		b := New(g)
		defer b.Close()
		fmt.Fprintln(b, "first")
		synctest.Wait() // the goroutine holds "first", its write waiting
		for i := range 100 {
			fmt.Fprintln(b, "queued", i)
		}
		g.mu.Lock()
		g.hold = false
		g.mu.Unlock()
		close(g.release)
		synctest.Wait() // every batch written: the goroutine waits for the next
		out, writes := g.snapshot()
		if writes != 2 {
			t.Fatalf("%d writes for 101 lines, 100 of them queued behind one write: want 2", writes)
		}
		if !strings.HasPrefix(out, "first\nqueued 0\n") || !strings.HasSuffix(out, "queued 99\n") {
			t.Fatalf("output %.60q…: out of order", out)
		}

		fmt.Fprintln(b, "idle")
		synctest.Wait()
		if out, writes := g.snapshot(); writes != 3 || !strings.HasSuffix(out, "idle\n") {
			t.Fatalf("an idle writer's line: %d writes, output ends %q; want it written at once", writes, out[len(out)-10:])
		}
	})
}

// Writes block, as on a full pipe, once maxPending bytes wait; Close
// writes what is pending, and later writes go straight through.
func TestBatchWriterBackPressureAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &gateWriter{hold: true, release: make(chan struct{})}
		b := New(g)
		fmt.Fprintln(b, "held")
		synctest.Wait()
		big := bytes.Repeat([]byte("x"), maxPending)
		_, _ = b.Write(big) // fills the queue
		returned := make(chan struct{})
		go func() {
			fmt.Fprintln(b, "blocked")
			close(returned)
		}()
		synctest.Wait()
		select {
		case <-returned:
			t.Fatal("a write returned with maxPending bytes waiting")
		default:
		}
		g.mu.Lock()
		g.hold = false
		g.mu.Unlock()
		close(g.release)
		<-returned
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(b, "after close")
		out, _ := g.snapshot()
		if want := "held\n" + string(big) + "blocked\nafter close\n"; out != want {
			t.Fatalf("output of %d bytes, want %d: held, the queue, the blocked line, the line after Close", len(out), len(want))
		}
	})
}
