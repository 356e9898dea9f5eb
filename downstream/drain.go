package downstream

import (
	"context"
	"sync"
	"time"
)

// drain is the cache's side of a graceful stop: the moment it starts, and
// what other parts asked to be told of it.
type drain struct {
	once    sync.Once
	started chan struct{} // closed when the drain starts

	mu    sync.Mutex
	hooks []func()
}

func newDrain() *drain { return &drain{started: make(chan struct{})} }

// StartDrain marks the cache draining: the channel of Draining closes, the
// sweeper stops (no sweep starts while the process stops), and every hook
// registered with OnDrain runs, in order, once. The binary calls it on
// SIGTERM or SIGINT, when it stops being ready and before it stops
// accepting connections; requests and fills in flight carry on. Calling it
// again does nothing.
func (c *Cache) StartDrain() {
	c.drain.once.Do(func() {
		close(c.drain.started)
		// The cache's own goroutines (the sweeper, health polls, key
		// refreshes) have nothing to do in the seconds left.
		c.cancel()
		c.log.Info("draining: no longer ready; requests and fills in flight carry on")
		c.drain.mu.Lock()
		hooks := c.drain.hooks
		c.drain.hooks = nil
		c.drain.mu.Unlock()
		for _, f := range hooks {
			f()
		}
	})
}

// Draining is closed once the drain started: a part that must not start
// new work while the process stops (take the lead of a fill, take a lease,
// start a sweep) selects on it.
func (c *Cache) Draining() <-chan struct{} { return c.drain.started }

// OnDrain registers f to run when the drain starts (at once, in the
// caller's goroutine, if it has started): the hook for handing over what
// this process holds for the cluster, such as fill leases. f must not
// block for long: the drain time bounds the whole stop.
func (c *Cache) OnDrain(f func()) {
	c.drain.mu.Lock()
	select {
	case <-c.drain.started:
		c.drain.mu.Unlock()
		f()
		return
	default:
	}
	c.drain.hooks = append(c.drain.hooks, f)
	c.drain.mu.Unlock()
}

// Shutdown stops the cache gracefully: it starts the drain (if not yet),
// lets the fills in flight finish until ctx's deadline (without one, for
// the close grace), then cancels what is left and closes the cache as
// Close does. The binary calls it once its
// HTTP server stopped, with what remains of the drain time.
func (c *Cache) Shutdown(ctx context.Context) error {
	c.StartDrain()
	grace := c.closeGrace
	if deadline, ok := ctx.Deadline(); ok {
		// Nothing left: cancel the fills at once.
		grace = max(time.Until(deadline), time.Nanosecond)
	}
	return c.close(grace)
}
