package warm

import (
	"context"
	"errors"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/content-cache/content-cache/downstream/internal/cluster"
)

// Leases are what the schedule needs of the cluster's leases: one replica
// runs at a time (consumer-owned; cluster.MemoryLeases on one node,
// cluster.RedisLeases with replicas).
type Leases interface {
	Acquire(ctx context.Context, key, owner string, ttl time.Duration) (cluster.Lease, bool, error)
	Renew(ctx context.Context, l cluster.Lease, ttl time.Duration) error
	Release(ctx context.Context, l cluster.Lease) error
}

// Recorder counts what the schedule does (the cache's metrics).
type Recorder interface {
	WarmRun(result string)
	WarmImages(warmed, failed int)
	WarmBytes(n int64)
	WarmSucceeded(at time.Time)
}

// Results of a scheduled run, as counted.
const (
	RunOK      = "ok"      // every image warmed
	RunFailed  = "failed"  // one image or more failed
	RunSkipped = "skipped" // another replica ran it, or runs it now
)

// Lease names. LeaseRun is held (and renewed) while a run lasts: one run at
// a time across the replicas. LeasePeriod is taken when a run starts and
// left to expire shortly before the next interval: one run per interval,
// whichever replica's timer fires first.
const (
	LeaseRun    = "warm"
	LeasePeriod = "warm/period"
)

// DefaultLeaseTTL is the run lease's lifetime between renewals: how long a
// replica that died mid-run keeps the others from warming.
const DefaultLeaseTTL = 30 * time.Second

// ErrSkipped is a run another replica holds.
var ErrSkipped = errors.New("warm: another replica warms now or did in this interval")

// Scheduler runs warm runs every Interval, on one replica at a time.
type Scheduler struct {
	Interval time.Duration
	Leases   Leases
	Owner    string        // this replica's name in the leases
	LeaseTTL time.Duration // default DefaultLeaseTTL
	Log      *logrus.Entry
	Metrics  Recorder
	Now      func() time.Time
	// Warm is one run.
	Warm func(ctx context.Context) ([]Result, error)
}

func (s *Scheduler) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Scheduler) leaseTTL() time.Duration {
	if s.LeaseTTL > 0 {
		return s.LeaseTTL
	}
	return DefaultLeaseTTL
}

// Run runs at once, then at every tick (every Interval when tick is nil),
// until ctx ends.
func (s *Scheduler) Run(ctx context.Context, tick <-chan time.Time) {
	if tick == nil {
		t := time.NewTicker(s.Interval)
		defer t.Stop()
		tick = t.C
	}
	for ctx.Err() == nil {
		if _, err := s.RunOnce(ctx); err != nil && !errors.Is(err, ErrSkipped) && ctx.Err() == nil {
			s.Log.WithError(err).Warn("warm: run failed; retrying at the next interval")
		}
		select {
		case <-ctx.Done():
		case <-tick:
		}
	}
}

// RunOnce runs now unless another replica runs, or ran in this interval
// (ErrSkipped). A Leases that cannot answer (Redis down) does not stop
// warming: this replica warms as a single node would, at worst alongside
// another one (each blob verified, fetched once per replica).
func (s *Scheduler) RunOnce(ctx context.Context) ([]Result, error) {
	runLease, held, err := s.acquire(ctx, LeaseRun, s.leaseTTL())
	if err == nil && !held {
		s.Metrics.WarmRun(RunSkipped)
		return nil, ErrSkipped
	}
	period, pheld, perr := s.acquire(ctx, LeasePeriod, s.Interval*9/10)
	if perr == nil && !pheld {
		if err == nil {
			_ = s.Leases.Release(context.WithoutCancel(ctx), runLease)
		}
		s.Metrics.WarmRun(RunSkipped)
		return nil, ErrSkipped
	}
	_ = period // left to expire: it marks this interval as done
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err == nil {
		stop := s.keep(runCtx, runLease, cancel)
		defer stop()
	}
	results, werr := s.Warm(runCtx)
	if werr == nil {
		werr = context.Cause(runCtx)
		if errors.Is(werr, context.Canceled) && ctx.Err() == nil {
			werr = nil
		}
	}
	s.record(results, werr)
	return results, werr
}

// acquire takes key; an error is logged (the caller runs without it).
func (s *Scheduler) acquire(ctx context.Context, key string, ttl time.Duration) (cluster.Lease, bool, error) {
	l, ok, err := s.Leases.Acquire(ctx, key, s.Owner, ttl)
	if err != nil {
		s.Log.WithError(err).WithField("lease", key).Warn("warm: cannot tell whether another replica warms; warming here")
	}
	return l, ok, err
}

// keep renews the run lease until stop is called; a lost lease cancels the
// run (another replica took over).
func (s *Scheduler) keep(ctx context.Context, l cluster.Lease, cancel context.CancelCauseFunc) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(s.leaseTTL() / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.Leases.Renew(ctx, l, s.leaseTTL()); errors.Is(err, cluster.ErrLeaseLost) {
					cancel(errors.New("warm: the run lease was lost; another replica warms"))
					return
				}
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		_ = s.Leases.Release(context.WithoutCancel(ctx), l)
	}
}

// record counts and logs a run.
func (s *Scheduler) record(results []Result, err error) {
	warmed, failed := 0, 0
	var bytes int64
	for _, r := range results {
		bytes += r.Bytes
		if r.Err != nil {
			failed++
			s.Log.WithError(r.Err).WithField("image", r.Ref).Warn("warm: image failed")
			continue
		}
		warmed++
	}
	s.Metrics.WarmImages(warmed, failed)
	s.Metrics.WarmBytes(bytes)
	result := RunOK
	if failed > 0 || err != nil {
		result = RunFailed
	} else {
		s.Metrics.WarmSucceeded(s.now())
	}
	s.Metrics.WarmRun(result)
	s.Log.WithFields(logrus.Fields{"images": len(results), "warmed": warmed, "failed": failed, "bytes": bytes, "result": result}).Info("warm: run done")
}
