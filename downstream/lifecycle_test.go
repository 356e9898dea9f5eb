package downstream_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// Close lets a fill that trickles on finish for the close grace period
// only, then cancels it: it does not wait for filltimeout (an hour by
// default), and no goroutine of the cache outlives it.
func TestCloseCancelsFillsAfterGrace(t *testing.T) {
	noLeaks(t)
	fake, srv := newFakeUpstream(t, "hang", 1<<20)
	extra := map[string]any{}
	downstream.SetOptions(extra, downstream.Options{CloseGrace: 50 * time.Millisecond})
	cache := regtest.StartCache(t, srv.URL, extra)
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := blobGETWith(t.Context(), client, cache.URL+"/v2/test/blob/blobs/"+fake.dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the client gives up; the fill goes on, hung

	closed := make(chan error, 1)
	go func() { closed <- cache.Cache.Close() }()
	// Bounded far below the hour a hung fill could last (and the minute of
	// idletimeout that would otherwise end it).
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Close still waits for a hung fill")
	}
	if blobStored(cache.Root, fake.dgst) {
		t.Fatal("a cancelled fill was stored")
	}
}
