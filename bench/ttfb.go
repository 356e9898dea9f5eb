package main

import (
	"context"
	"fmt"
	"math"
)

// ttfbBlobsPerRepeat is how many fresh blobs each repeat of the ttfb
// scenario pulls cold from every target: one first byte per blob and
// target, so that the median rests on repeats × this many samples, not on
// one 64 MiB pull per repeat.
const ttfbBlobsPerRepeat = 5

// ttfbScenario: cold time to first byte, from many fresh small blobs. Each
// blob is pulled once from every target in turn (its first GET at each),
// so each sample of "content-cache minus origin direct" pairs two pulls of
// the same blob taken a few milliseconds apart.
func (b *bench) ttfbScenario(ctx context.Context) error {
	ts := b.direct
	sz := int64(b.o.ttfbSize)
	s := series{}
	for r := range b.o.repeats {
		logf("cold time to first byte, %d blobs of %s, repeat %d/%d", ttfbBlobsPerRepeat, fmtBytes(float64(sz)), r+1, b.o.repeats)
		for i := range ttfbBlobsPerRepeat {
			path, err := b.pushBlob(ctx, "bench/ttfb", sz)
			if err != nil {
				return err
			}
			got := map[string]float64{}
			for _, t := range rotate(ts, r*ttfbBlobsPerRepeat+i) {
				b.settle(ctx)
				tm, err := get(ctx, b.hc, t.url()+path, nil, sz)
				if err != nil {
					return err
				}
				got[t.label] = tm.ttfb.Seconds() * 1e3
				s.add(t.label+" ttfb", got[t.label])
			}
			o := got[ts[0].label]
			for _, t := range ts[1:] {
				s.add(t.label+" ttfb delta", got[t.label]-o)
			}
		}
	}
	t := &table{head: []string{"", "time to first byte p50", "p90", "minus origin direct's (per blob): p50", "p90"}, align: []string{"l", "r", "r", "r", "r"}}
	for i, tg := range ts {
		d50, d90 := "–", "–"
		if i > 0 {
			d50, d90 = fmtDeltaMS(percentile(s[tg.label+" ttfb delta"], 50)), fmtDeltaMS(percentile(s[tg.label+" ttfb delta"], 90))
		}
		t.row(tg.label, fmtMS(percentile(s[tg.label+" ttfb"], 50)), fmtMS(percentile(s[tg.label+" ttfb"], 90)), d50, d90)
	}
	n := b.o.repeats * ttfbBlobsPerRepeat
	fmt.Fprintf(&b.md, "### Cold time to first byte: %d fresh blobs of %s\n\n%s\n", n, fmtBytes(float64(sz)), t)
	fmt.Fprintf(&b.md, "Each blob is pulled once from every target, the order rotating from blob to blob; a pull's time to first byte runs from sending the GET to the first byte of the body. "+
		"Percentiles over the %d blobs; \"minus origin direct's\" pairs the two pulls of each blob.\n\n", n)
	d := percentile(s[ts[1].label+" ttfb delta"], 50)
	b.addGoal(fmt.Sprintf("cold time to first byte, %d small blobs: content-cache minus origin direct (proxy: %s)", n, fmtDeltaMS(percentile(s[ts[2].label+" ttfb delta"], 50))),
		fmtDeltaMS(d), "p90 "+fmtDeltaMS(percentile(s[ts[1].label+" ttfb delta"], 90)), "≤ +2 ms", d <= 2, !math.IsNaN(d))
	if bt, ok := baseOf(ts); ok {
		fmt.Fprintf(&b.md, "A/B: time to first byte minus origin direct's, p50: content-cache (new) %s, content-cache (base) %s.\n\n",
			fmtDeltaMS(d), fmtDeltaMS(percentile(s[bt.label+" ttfb delta"], 50)))
	}
	return nil
}
