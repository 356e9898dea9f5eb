package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/store"
)

// impl is one implementation under the conformance suite. Two replicas of
// one cluster are two values made by replica (a single node's memory
// implementations are one value shared). expire makes every lease and hold
// older than d, however the implementation measures time.
type impl struct {
	leases func(t *testing.T) Leases
	inUse  func(t *testing.T, replica int) InUse
	pulls  func(t *testing.T) PullIndex
	// sizes are the stored sizes as replica sees them (a single node's
	// are one value shared).
	sizes   func(t *testing.T, replica int) Sizes
	expire  func(t *testing.T, d time.Duration)
	cluster bool // replicas see each other's holds
}

// runConformance is the suite every implementation passes.
func runConformance(t *testing.T, im impl) {
	t.Run("LeaseExclusive", func(t *testing.T) {
		ls := im.leases(t)
		ctx := t.Context()
		a, ok, err := ls.Acquire(ctx, "fill/x", "A", time.Minute)
		if err != nil || !ok || a.Owner != "A" || a.Key != "fill/x" {
			t.Fatalf("first Acquire = %+v %v %v", a, ok, err)
		}
		b, ok, err := ls.Acquire(ctx, "fill/x", "B", time.Minute)
		if err != nil || ok || b != a {
			t.Fatalf("second Acquire = %+v %v %v; want the holder %+v, not granted", b, ok, err, a)
		}
		h, held, err := ls.Holder(ctx, "fill/x")
		if err != nil || !held || h != a {
			t.Fatalf("Holder = %+v %v %v, want %+v", h, held, err, a)
		}
		if err := ls.Renew(ctx, a, time.Minute); err != nil {
			t.Fatalf("Renew by the holder: %v", err)
		}
		if err := ls.Renew(ctx, Lease{Key: a.Key, Owner: "B", Token: a.Token}, time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Renew by another owner: %v, want ErrLeaseLost", err)
		}
		if err := ls.Release(ctx, a); err != nil {
			t.Fatal(err)
		}
		if _, held, _ := ls.Holder(ctx, "fill/x"); held {
			t.Fatal("held after Release")
		}
		c, ok, err := ls.Acquire(ctx, "fill/x", "B", time.Minute)
		if err != nil || !ok || c.Token <= a.Token {
			t.Fatalf("Acquire after Release = %+v %v %v; want a greater token than %d", c, ok, err, a.Token)
		}
		if err := ls.Renew(ctx, a, time.Minute); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Renew of a released lease: %v, want ErrLeaseLost", err)
		}
		if err := ls.Release(ctx, a); err != nil {
			t.Fatalf("Release of a lost lease: %v, want nil", err)
		}
		if h, held, _ := ls.Holder(ctx, "fill/x"); !held || h != c {
			t.Fatalf("releasing a lost lease released the new one: %+v %v", h, held)
		}
		// Another key is another lease.
		if _, ok, err := ls.Acquire(ctx, "fill/y", "A", time.Minute); err != nil || !ok {
			t.Fatalf("Acquire of another key: %v %v", ok, err)
		}
	})

	t.Run("LeaseExpires", func(t *testing.T) {
		ls := im.leases(t)
		ctx := t.Context()
		a, ok, err := ls.Acquire(ctx, "sweep", "A", time.Second)
		if err != nil || !ok {
			t.Fatal(ok, err)
		}
		im.expire(t, 2*time.Second)
		if _, held, err := ls.Holder(ctx, "sweep"); err != nil || held {
			t.Fatalf("held past its ttl: %v %v", held, err)
		}
		if err := ls.Renew(ctx, a, time.Second); !errors.Is(err, ErrLeaseLost) {
			t.Fatalf("Renew of an expired lease: %v, want ErrLeaseLost", err)
		}
		b, ok, err := ls.Acquire(ctx, "sweep", "B", time.Minute)
		if err != nil || !ok || b.Token <= a.Token {
			t.Fatalf("takeover = %+v %v %v; want a greater token than %d", b, ok, err, a.Token)
		}
	})

	t.Run("LeaseOneWinner", func(t *testing.T) {
		ls := im.leases(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 16 {
			wg.Go(func() {
				_, ok, err := ls.Acquire(t.Context(), "race", string(rune('a'+i)), time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d of 16 racing Acquires won, want 1", won)
		}
	})

	t.Run("InUse", func(t *testing.T) {
		u := im.inUse(t, 0)
		ctx := t.Context()
		d := digest.FromString("d")
		release, err := u.Hold(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		again := u.HoldAgain(d)
		if ok, _ := u.BeginRemoval(ctx, d); ok {
			t.Fatal("removal began while held")
		}
		release()
		release() // a second call releases nothing more
		if ok, _ := u.BeginRemoval(ctx, d); ok {
			t.Fatal("removal began while still held once")
		}
		again()
		if ok, err := u.BeginRemoval(ctx, d); !ok || err != nil {
			t.Fatalf("removal refused when nothing holds it: %v", err)
		}
		if ok, _ := u.BeginRemoval(ctx, d); ok {
			t.Fatal("a second removal began during the first")
		}
		// A request during the removal waits for it: with a context that
		// has ended it gives up instead of holding.
		ended, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := u.Hold(ended, d); !errors.Is(err, context.Canceled) {
			t.Fatalf("hold during removal: %v, want to wait (context.Canceled)", err)
		}
		got := make(chan error, 1)
		go func() {
			r, err := u.Hold(ctx, d)
			if err == nil {
				r()
			}
			got <- err
		}()
		u.EndRemoval(ctx, d)
		if err := <-got; err != nil {
			t.Fatalf("hold after the removal: %v", err)
		}
	})

	if im.cluster {
		t.Run("InUseAcrossReplicas", func(t *testing.T) {
			a, b := im.inUse(t, 0), im.inUse(t, 1)
			ctx := t.Context()
			d := digest.FromString("across")
			release, err := b.Hold(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := a.BeginRemoval(ctx, d); ok || err != nil {
				t.Fatalf("replica A began removing what replica B holds: %v %v", ok, err)
			}
			release()
			if ok, err := a.BeginRemoval(ctx, d); !ok || err != nil {
				t.Fatalf("removal refused once B released it: %v", err)
			}
			// B waits while A removes it: its hold gives up only with its
			// context.
			short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			if _, err := b.Hold(short, d); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("B's hold while A removes it: %v, want to wait (context.DeadlineExceeded)", err)
			}
			a.EndRemoval(ctx, d)
			r, err := b.Hold(ctx, d)
			if err != nil {
				t.Fatalf("B's hold after A's removal: %v", err)
			}
			r()
		})
	}

	t.Run("Sizes", func(t *testing.T) {
		a, b := im.sizes(t, 0), im.sizes(t, 1)
		ctx := t.Context()
		d1, d2, d3 := digest.FromString("s1"), digest.FromString("s2"), digest.FromString("s3")
		check := func(what string, got int64, err error, want int64) {
			t.Helper()
			if err != nil || got != want {
				t.Fatalf("%s = %d, %v; want %d", what, got, err, want)
			}
		}
		n, err := a.Total(ctx)
		check("Total of nothing", n, err, 0)
		n, err = a.Add(ctx, d1, 100)
		check("Add d1", n, err, 100)
		n, err = b.Add(ctx, d2, 20)
		check("Add d2 (the other replica)", n, err, 120)
		n, err = b.Add(ctx, d1, 100)
		check("Add d1 again (a double commit)", n, err, 120)
		n, err = a.Remove(ctx, d2)
		check("Remove d2", n, err, 100)
		n, err = a.Remove(ctx, d2)
		check("Remove d2 again", n, err, 100)
		n, err = b.Replace(ctx, map[digest.Digest]int64{d2: 5, d3: 7})
		check("Replace", n, err, 12)
		n, err = a.Total(ctx)
		check("Total after Replace", n, err, 12)
		n, err = a.Remove(ctx, d1)
		check("Remove what Replace dropped", n, err, 12)
		n, err = a.Add(ctx, d3, 7)
		check("Add what Replace counted", n, err, 12)
		n, err = a.Replace(ctx, nil)
		check("Replace with nothing", n, err, 0)
		n, err = b.Add(ctx, d1, 1)
		check("Add after emptying", n, err, 1)
	})

	t.Run("Pulls", func(t *testing.T) {
		p := im.pulls(t)
		ctx := t.Context()
		d := digest.FromString("pulled")
		t0 := time.Unix(1_700_000_000, 0).UTC()
		ra := store.Ref{Digest: d, Repo: "lib/a", Kind: store.KindLayer}
		rb := store.Ref{Digest: d, Repo: "lib/b", Kind: store.KindManifest}
		for _, pl := range []Pull{
			{Ref: ra, At: t0, Size: 42},
			{Ref: ra, At: t0.Add(time.Minute)},
			{Ref: ra, At: t0.Add(-time.Minute)}, // older: ignored
			{Ref: rb, At: t0},
		} {
			if err := p.Record(ctx, pl); err != nil {
				t.Fatal(err)
			}
		}
		want := []Pull{{Ref: ra, At: t0.Add(time.Minute), Size: 42}, {Ref: rb, At: t0}}
		sortPulls := func(ps []Pull) {
			slices.SortFunc(ps, func(x, y Pull) int { return compareRefs(x.Ref, y.Ref) })
		}
		got, err := p.Of(ctx, d)
		sortPulls(got)
		if err != nil || !pullsEqual(got, want) {
			t.Fatalf("Of = %v %v, want %v", got, err, want)
		}
		drained, err := p.Drain(ctx)
		sortPulls(drained)
		if err != nil || !pullsEqual(drained, want) {
			t.Fatalf("Drain = %v %v, want %v", drained, err, want)
		}
		if drained, _ := p.Drain(ctx); len(drained) != 0 {
			t.Fatalf("second Drain = %v, want nothing new", drained)
		}
		if err := p.Record(ctx, Pull{Ref: rb, At: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		if drained, _ := p.Drain(ctx); len(drained) != 1 || drained[0].Ref != rb || !drained[0].At.Equal(t0.Add(time.Hour)) {
			t.Fatalf("Drain after one more pull = %v", drained)
		}
		if err := p.Forget(ctx, d); err != nil {
			t.Fatal(err)
		}
		if got, _ := p.Of(ctx, d); len(got) != 0 {
			t.Fatalf("Of after Forget = %v", got)
		}
	})
}

func compareRefs(a, b store.Ref) int {
	if a.Repo != b.Repo {
		if a.Repo < b.Repo {
			return -1
		}
		return 1
	}
	if a.Kind < b.Kind {
		return -1
	}
	if a.Kind > b.Kind {
		return 1
	}
	return 0
}

func pullsEqual(a, b []Pull) bool {
	return slices.EqualFunc(a, b, func(x, y Pull) bool { return x.Ref == y.Ref && x.At.Equal(y.At) && x.Size == y.Size })
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestMemoryConformance(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	var shared *MemoryInUse
	var sizes *MemorySizes
	runConformance(t, impl{
		leases: func(*testing.T) Leases { return NewMemoryLeases(clock.Now) },
		inUse: func(*testing.T, int) InUse {
			if shared == nil {
				shared = NewMemoryInUse()
			}
			return shared
		},
		pulls: func(*testing.T) PullIndex { return NewMemoryPulls() },
		sizes: func(_ *testing.T, replica int) Sizes {
			if replica == 0 {
				sizes = NewMemorySizes()
			}
			return sizes
		},
		expire: func(_ *testing.T, d time.Duration) { clock.Advance(d) },
	})
}
