package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// memoryStalls counts the kernel's direct reclaims and compaction stalls so
// far (/proc/vmstat): when a run makes them grow, the page cache was full or
// memory fragmented, and file writes cost several times their usual CPU
// (BENCHMARKS.md, "A note on this machine"). -1 when unreadable.
func memoryStalls() (reclaims, compactions int64) {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return -1, -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(name, "allocstall_"):
			reclaims += n
		case name == "compact_stall":
			compactions += n
		}
	}
	return reclaims, compactions
}

// memoryNote says whether the kernel stalled on memory during the run.
func memoryNote(r0, c0, r1, c1 int64) string {
	if r0 < 0 || r1 < 0 {
		return ""
	}
	dr, dc := r1-r0, c1-c0
	if dr == 0 && dc == 0 {
		return "Memory: no direct reclaim and no compaction stall during the run (/proc/vmstat).\n\n"
	}
	return fmt.Sprintf("**Memory pressure during the run:** %d direct reclaims and %d compaction stalls (/proc/vmstat). "+
		"File writes may have cost several times their usual CPU; compare ratios within this run only, "+
		"and run `sync; echo 3 > /proc/sys/vm/drop_caches` (as root) before the next.\n\n", dr, dc)
}
