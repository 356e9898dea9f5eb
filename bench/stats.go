package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// median of xs (NaN when empty).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile is the nearest-rank percentile p (0-100) of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

// series collects the values of one run, by name.
type series map[string][]float64

func (s series) add(name string, v float64) { s[name] = append(s[name], v) }

func (s series) med(name string) float64 { return median(s[name]) }

func (s series) max(name string) float64 {
	if len(s[name]) == 0 {
		return math.NaN()
	}
	return slices.Max(s[name])
}

// Formatting: NaN (not measured) shows as a dash.

func fmtMS(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case math.Abs(v) < 10:
		return fmt.Sprintf("%.2f ms", v)
	case math.Abs(v) < 100:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func fmtDeltaMS(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	s := fmtMS(v)
	if v >= 0 {
		s = "+" + s
	}
	return s
}

func fmtMBps(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if v < 100 {
		return fmt.Sprintf("%.1f MB/s", v)
	}
	return fmt.Sprintf("%.0f MB/s", v)
}

func fmtRatio(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "–"
	case v < 10:
		return fmt.Sprintf("%.2f×", v)
	}
	return fmt.Sprintf("%.0f×", v)
}

func fmtSec(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if v < 10 {
		return fmt.Sprintf("%.2f s", v)
	}
	return fmt.Sprintf("%.1f s", v)
}

func fmtCount(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	if v == math.Trunc(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return fmt.Sprintf("%.1f", v)
}

func fmtRate(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.0f req/s", v)
}

// fmtBytes prints a size in binary units.
func fmtBytes(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 1<<30:
		return trimZero(fmt.Sprintf("%.2f", v/(1<<30))) + " GiB"
	case v >= 1<<20:
		return trimZero(fmt.Sprintf("%.1f", v/(1<<20))) + " MiB"
	case v >= 1<<10:
		return trimZero(fmt.Sprintf("%.1f", v/(1<<10))) + " KiB"
	}
	return fmt.Sprintf("%.0f B", v)
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// size is a flag of a byte count: 1048576, 64MiB, 1GiB, 150MB.
type size int64

func (s *size) String() string { return fmtBytes(float64(*s)) }

func (s *size) Set(v string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range units {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		return fmt.Errorf("expected a positive size such as 64MiB, 1GiB or 150MB")
	}
	*s = size(f * float64(mult))
	return nil
}

// table is a markdown table.
type table struct {
	head  []string
	align []string // "l" or "r" per column
	rows  [][]string
}

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) String() string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(t.head, " | ") + " |\n|")
	for i := range t.head {
		if i < len(t.align) && t.align[i] == "r" {
			b.WriteString("--:|")
		} else {
			b.WriteString("---|")
		}
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return b.String()
}
