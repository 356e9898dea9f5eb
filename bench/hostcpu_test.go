package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseHostCPU(t *testing.T) {
	got, err := parseHostCPU("cpu  100 2 30 400 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	busy := (100 + 2 + 30 + 6 + 7 + 8) * 10 * time.Millisecond
	if got.busy != busy || got.all != busy+(400+5)*10*time.Millisecond {
		t.Fatalf("got %+v, want busy %v of %v", got, busy, busy+4050*time.Millisecond)
	}
	d := got.sub(hostCPU{busy: busy - 100*time.Millisecond, all: got.all - 400*time.Millisecond})
	if s := d.share(); s != 0.25 {
		t.Fatalf("share %v, want 0.25", s)
	}
	if s := (hostCPU{}).share(); !math.IsNaN(s) {
		t.Fatalf("share of no time %v, want NaN", s)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 x 4 5 6 7 8"} {
		if _, err := parseHostCPU(bad); err == nil || !strings.Contains(err.Error(), "/proc/stat") {
			t.Errorf("parseHostCPU(%q): %v, want an error naming /proc/stat", bad, err)
		}
	}
}
