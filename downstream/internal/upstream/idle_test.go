package upstream

import (
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"
)

// A body that stalls is cut after the idle timeout, counted from its last
// byte, not from its start: a slow but steady transfer goes on. Time is
// synctest's, so the minute of idle timeout takes no real time.
func TestIdleBodyCutsStalls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
		b := newIdleBody(pr, time.Minute, cancel)
		defer b.Close()

		// A byte every 50s: never idle for a minute.
		go func() {
			for range 3 {
				time.Sleep(50 * time.Second)
				_, _ = pw.Write([]byte{1})
			}
		}()
		start := time.Now()
		buf := make([]byte, 1)
		for i := range 3 {
			if _, err := b.Read(buf); err != nil {
				t.Fatalf("byte %d of a steady body: %v", i, err)
			}
		}
		// Then nothing: cut a minute after the last byte.
		_, err := b.Read(buf)
		if !errors.Is(err, errIdle) {
			t.Fatalf("stalled body: %v, want errIdle", err)
		}
		if got, want := time.Since(start), 150*time.Second+time.Minute; got != want {
			t.Fatalf("cut after %v, want %v (a minute after the last byte)", got, want)
		}
	})
}
