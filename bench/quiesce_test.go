package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
)

// CPU is read once the uploads in progress under a registry's storage are
// gone: quiesce waits while one is there and returns once it goes.
func TestQuiesceWaitsForUploads(t *testing.T) {
	b := &bench{}
	p := &proc{kind: kindCache, root: t.TempDir()}
	glob := b.uploadsGlob(p)
	b.quiesce(context.Background(), p, glob) // nothing in progress: at once

	// content-cache's layout: <root>/docker/registry/v2/repositories/<repo>/_uploads/<uuid>
	up := filepath.Join(p.root, "docker/registry/v2/repositories/bench/blob/_uploads/0b7a")
	if err := os.MkdirAll(up, 0o755); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(glob); len(m) != 1 {
		t.Fatalf("%s matches %v, want the upload %s", glob, m, up)
	}
	// In a bubble the ticker's time is synctest's: Wait returns once the
	// polling goroutine blocks on its ticker, with the upload still there.
	synctest.Test(t, func(t *testing.T) {
		done := make(chan struct{})
		go func() {
			b.quiesce(context.Background(), p, glob)
			close(done)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("quiesce returned while an upload was in progress")
		default:
		}
		if err := os.RemoveAll(up); err != nil {
			t.Fatal(err)
		}
		<-done
	})
}
