package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// A/B mode (-base-bin, -base-rev): a second content-cache, the previous
// binary, runs beside the new one as the target "content-cache (base)" in
// the same repeats of every scenario, so that both meet the same noise.
// Each scenario then adds a table of new/base ratios taken per repeat.

// baseBinary sets b.base from -base-bin, or builds it from -base-rev.
func (b *bench) baseBinary(ctx context.Context) error {
	switch {
	case b.o.baseBin != "" && b.o.baseRev != "":
		return fmt.Errorf("-base-bin and -base-rev: give one")
	case b.o.baseBin != "":
		if _, err := os.Stat(b.o.baseBin); err != nil {
			return fmt.Errorf("-base-bin: %w", err)
		}
		b.base = b.o.baseBin
	case b.o.baseRev != "":
		bin, err := buildRev(ctx, b.o.baseRev, b.work, b.o.cpuprofile != "")
		if err != nil {
			return fmt.Errorf("-base-rev %s: %w", b.o.baseRev, err)
		}
		b.base = bin
	}
	return nil
}

// buildRev builds ./cmd/content-cache of the git revision rev of the
// repository the harness runs in, from `git archive` (the repository and
// its worktrees stay as they are), versioned like `make build` does. With
// pprof (-cpuprofile), it builds ./bench/pprofbin where rev has it, for
// the profile scenario.
func buildRev(ctx context.Context, rev, work string, pprof bool) (string, error) {
	src := filepath.Join(work, "base-src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	desc, err := exec.CommandContext(ctx, "git", "describe", "--always", rev).Output()
	if err != nil {
		return "", fmt.Errorf("git describe: %w", err)
	}
	version := strings.TrimSpace(string(desc))
	logf("A/B: building the base binary from %s (%s)", rev, version)
	archive := exec.CommandContext(ctx, "sh", "-c", `git archive --format=tar "$1" | tar -x -C "$2"`, "sh", rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive: %v: %s", err, strings.TrimSpace(string(out)))
	}
	pkg := "./cmd/content-cache"
	if _, err := os.Stat(filepath.Join(src, "bench", "pprofbin")); pprof && err == nil {
		pkg = "./bench/pprofbin"
	}
	bin := filepath.Join(work, "base-bin", "content-cache")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-X github.com/content-cache/content-cache/registry.Version="+version, "-o", bin, pkg)
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return bin, nil
}

// abMetric is one line of an A/B table: the series names of the new
// binary's and the base's values, repeat by repeat.
type abMetric struct {
	what           string
	newKey, base   string
	format         func(float64) string
	higherIsBetter bool
}

// abTable writes, when the run has a base, a table of new/base per metric:
// the medians of each, the median of the per-repeat ratios and their range.
func (b *bench) abTable(title string, s series, ms []abMetric) {
	if b.base == "" {
		return
	}
	t := &table{head: []string{"", "content-cache (new)", "content-cache (base)", "new / base (median of repeats)", "per repeat: lowest … highest", "better"},
		align: []string{"l", "r", "r", "r", "r", "l"}}
	for _, m := range ms {
		nv, bv := s[m.newKey], s[m.base]
		var ratios []float64
		for i := range min(len(nv), len(bv)) {
			if r := nv[i] / bv[i]; !math.IsNaN(r) && !math.IsInf(r, 0) {
				ratios = append(ratios, r)
			}
		}
		better := "lower"
		if m.higherIsBetter {
			better = "higher"
		}
		t.row(m.what, m.format(median(nv)), m.format(median(bv)), fmtRatio(median(ratios)), spread(ratios, fmtRatio), better)
	}
	fmt.Fprintf(&b.md, "#### A/B: %s\n\n%s\n", title, t)
}
