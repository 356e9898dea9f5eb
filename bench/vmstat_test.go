package main

import (
	"strings"
	"testing"
)

// The run's note says whether the kernel stalled on memory, and how often.
func TestMemoryNote(t *testing.T) {
	if got := memoryNote(5, 7, 5, 7); !strings.Contains(got, "no direct reclaim") {
		t.Errorf("no growth: %q", got)
	}
	got := memoryNote(5, 7, 9, 10)
	if !strings.Contains(got, "4 direct reclaims and 3 compaction stalls") {
		t.Errorf("growth: %q", got)
	}
	if got := memoryNote(-1, -1, -1, -1); got != "" {
		t.Errorf("unreadable: %q", got)
	}
}
