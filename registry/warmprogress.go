package registry

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/content-cache/content-cache/downstream"
)

// reporter shows a warm run: a progress display on a terminal, a plain
// line per image elsewhere.
type reporter interface {
	downstream.WarmProgress
	// Wait returns once everything is shown.
	Wait()
}

// plainReporter prints one line per image when it ends: for logs and
// pipes, where a progress display would be noise.
type plainReporter struct {
	mu  sync.Mutex
	out io.Writer
}

func (p *plainReporter) Image(string) downstream.WarmImageProgress { return plainImage{p} }
func (p *plainReporter) Wait()                                     {}

type plainImage struct{ p *plainReporter }

func (plainImage) Resolved(int, int64) {}
func (plainImage) Bytes(int64)         {}
func (plainImage) BlobDone()           {}
func (i plainImage) Done(r downstream.WarmResult) {
	i.p.mu.Lock()
	defer i.p.mu.Unlock()
	fmt.Fprintln(i.p.out, resultLine(r))
}

// barReporter draws one bar per image with mpb (github.com/vbauerster/mpb):
// bytes in storage against the image's total, layers done, and the
// average rate. A finished image's bar stays, marked done or failed, and
// its plain line is printed above the bars.
type barReporter struct {
	p *mpb.Progress
}

func newBarReporter(ctx context.Context, out io.Writer) *barReporter {
	return &barReporter{p: mpb.NewWithContext(ctx, mpb.WithOutput(out), mpb.WithWidth(32))}
}

func (b *barReporter) Wait() { b.p.Wait() }

func (b *barReporter) Image(ref string) downstream.WarmImageProgress {
	img := &barImage{r: b}
	bar := b.p.AddBar(0,
		mpb.PrependDecorators(decor.Name(ref, decor.WCSyncSpaceR)),
		mpb.AppendDecorators(
			decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace),
			decor.Any(func(decor.Statistics) string {
				return fmt.Sprintf("%d/%d layers", img.done.Load(), img.blobs.Load())
			}, decor.WCSyncSpace),
			decor.Any(func(st decor.Statistics) string { return img.rate(st.Current) }, decor.WCSyncSpace),
			decor.OnAbort(decor.OnComplete(decor.Name(""), " done"), " failed"),
		),
	)
	img.bar = bar
	return img
}

// barImage is one image's bar.
type barImage struct {
	r       *barReporter
	bar     *mpb.Bar
	blobs   atomic.Int64
	done    atomic.Int64
	start   atomic.Int64 // unix nanoseconds of Resolved
	elapsed atomic.Int64 // nanoseconds from Resolved to Done; 0 while running
}

func (i *barImage) Resolved(blobs int, total int64) {
	i.blobs.Store(int64(blobs))
	i.start.Store(time.Now().UnixNano())
	i.bar.SetTotal(total, false)
}

// rate is the average rate since the image's blobs started, frozen when
// it ends.
func (i *barImage) rate(current int64) string {
	start := i.start.Load()
	if start == 0 {
		return ""
	}
	d := time.Duration(i.elapsed.Load())
	if d == 0 {
		d = time.Since(time.Unix(0, start))
	}
	if d <= 0 {
		return ""
	}
	return humanBytes(int64(float64(current)/d.Seconds())) + "/s"
}

func (i *barImage) Bytes(n int64) { i.bar.IncrInt64(n) }
func (i *barImage) BlobDone()     { i.done.Add(1) }

func (i *barImage) Done(r downstream.WarmResult) {
	if start := i.start.Load(); start != 0 {
		i.elapsed.Store(max(int64(time.Since(time.Unix(0, start))), 1))
	}
	// The finished image's line stays above the bars.
	fmt.Fprintln(i.r.p, resultLine(r))
	if r.Err != nil {
		i.bar.Abort(false)
		return
	}
	i.bar.SetTotal(-1, true)
}
