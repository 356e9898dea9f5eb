package warm

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream/internal/cluster"
	"github.com/content-cache/content-cache/internal/testkit"
)

// runs counts a scheduler's results.
type runs struct {
	mu sync.Mutex
	by map[string]int
}

func (r *runs) WarmRun(result string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.by == nil {
		r.by = map[string]int{}
	}
	r.by[result]++
}
func (r *runs) WarmImages(int, int)     {}
func (r *runs) WarmBytes(int64)         {}
func (r *runs) WarmSucceeded(time.Time) {}

func (r *runs) get(result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.by[result]
}

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.PanicLevel)
	return logrus.NewEntry(l)
}

// TestSchedulersShareLeases: two schedulers (two replicas) sharing one
// Leases run one at a time: while one runs, the other skips; after it,
// the other skips until the interval has passed; then one of them runs.
func TestSchedulersShareLeases(t *testing.T) {
	clock := &testkit.Clock{}
	leases := cluster.NewMemoryLeases(clock.Now)
	started, release := make(chan struct{}), make(chan struct{})
	calls := map[string]int{}
	var mu sync.Mutex
	sched := func(name string, block bool) (*Scheduler, *runs) {
		r := &runs{}
		return &Scheduler{
			Interval: time.Hour, Leases: leases, Owner: name, Log: quiet(), Metrics: r, Now: clock.Now,
			Warm: func(ctx context.Context) ([]Result, error) {
				mu.Lock()
				calls[name]++
				mu.Unlock()
				if block {
					close(started)
					<-release
				}
				return []Result{{Ref: "base/app:1"}}, nil
			},
		}, r
	}
	a, ra := sched("a", true)
	b, rb := sched("b", false)

	done := make(chan error, 1)
	go func() {
		_, err := a.RunOnce(t.Context())
		done <- err
	}()
	<-started
	if _, err := b.RunOnce(t.Context()); !errors.Is(err, ErrSkipped) {
		t.Fatalf("b while a runs: %v, want ErrSkipped", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("a: %v", err)
	}
	if _, err := b.RunOnce(t.Context()); !errors.Is(err, ErrSkipped) {
		t.Fatalf("b after a ran in this interval: %v, want ErrSkipped", err)
	}
	clock.Advance(time.Hour)
	if _, err := b.RunOnce(t.Context()); err != nil {
		t.Fatalf("b in the next interval: %v", err)
	}
	if _, err := a.RunOnce(t.Context()); !errors.Is(err, ErrSkipped) {
		t.Fatalf("a after b ran in this interval: %v, want ErrSkipped", err)
	}
	if calls["a"] != 1 || calls["b"] != 1 {
		t.Errorf("runs: a %d, b %d; want one each", calls["a"], calls["b"])
	}
	if ra.get(RunOK) != 1 || ra.get(RunSkipped) != 1 || rb.get(RunOK) != 1 || rb.get(RunSkipped) != 2 {
		t.Errorf("counted: a %v, b %v", ra.by, rb.by)
	}
}

// failingLeases cannot answer (Redis down).
type failingLeases struct{}

var errDown = errors.New("redis: connection refused")

func (failingLeases) Acquire(context.Context, string, string, time.Duration) (cluster.Lease, bool, error) {
	return cluster.Lease{}, false, errDown
}
func (failingLeases) Renew(context.Context, cluster.Lease, time.Duration) error { return errDown }
func (failingLeases) Release(context.Context, cluster.Lease) error              { return errDown }

// TestScheduleWithoutLeases: leases that cannot answer do not stop warming;
// the replica warms as a single node would.
func TestScheduleWithoutLeases(t *testing.T) {
	called := 0
	r := &runs{}
	s := &Scheduler{Interval: time.Hour, Leases: failingLeases{}, Owner: "a", Log: quiet(), Metrics: r,
		Warm: func(context.Context) ([]Result, error) { called++; return nil, nil }}
	if _, err := s.RunOnce(t.Context()); err != nil || called != 1 || r.get(RunOK) != 1 {
		t.Fatalf("RunOnce with leases down: %v, %d runs, counted %v; want one run", err, called, r.by)
	}
}

// TestRunTicks: Run runs at once, then at each tick, until its context
// ends.
func TestRunTicks(t *testing.T) {
	clock := &testkit.Clock{}
	ran := make(chan struct{}, 3)
	s := &Scheduler{Interval: time.Hour, Leases: cluster.NewMemoryLeases(clock.Now), Owner: "a", Log: quiet(), Metrics: &runs{}, Now: clock.Now,
		Warm: func(context.Context) ([]Result, error) { ran <- struct{}{}; return nil, nil }}
	tick := make(chan time.Time)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx, tick) }()
	<-ran // at once
	clock.Advance(time.Hour)
	tick <- clock.Now()
	<-ran // at the tick
	cancel()
	<-done
}
