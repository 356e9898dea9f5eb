package main

import (
	"strings"
	"testing"
)

func TestParseVMStat(t *testing.T) {
	r, c := parseVMStat("nr_free_pages 5\nallocstall_dma 1\nallocstall_normal 2\ncompact_stall 7\ncompact_fail 9\nbad\n")
	if r != 3 || c != 7 {
		t.Fatalf("reclaims %d, compactions %d; want 3 and 7", r, c)
	}
}

// The run's note says whether the kernel stalled on memory, how often, and
// how much memory went back to the hypervisor.
func TestMemoryNote(t *testing.T) {
	quiet := memState{5, 7, -1}
	if got := memoryNote(quiet, quiet); !strings.Contains(got, "no direct reclaim") || strings.Contains(got, "reporting") {
		t.Errorf("no growth: %q", got)
	}
	got := memoryNote(memState{5, 7, -1}, memState{9, 10, -1})
	if !strings.Contains(got, "4 direct reclaims and 3 compaction stalls") {
		t.Errorf("growth: %q", got)
	}
	got = memoryNote(memState{5, 7, 1000}, memState{5, 7, 1000 + 3<<20})
	if !strings.Contains(got, "no direct reclaim") || !strings.Contains(got, "Free page reporting: 3 GiB") {
		t.Errorf("reported: %q", got)
	}
	if got := memoryNote(memState{-1, -1, -1}, memState{-1, -1, -1}); got != "" {
		t.Errorf("unreadable: %q", got)
	}
}
