package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// memState is what the kernel says of memory that makes file writes cost
// more: direct reclaims and compaction stalls (/proc/vmstat), and on a
// guest with free page reporting the freed memory told to the hypervisor
// (reported_kib). A page reported and touched again is faulted in by the
// host: on this machine writing a GiB into such memory took 3.7 to 12.6 s
// of system time against 0.3 s into memory the host still backed
// (BENCHMARKS.md before issue #24, "A note on this machine", in git history). -1 when unreadable.
type memState struct {
	reclaims, compactions int64
	reportedKiB           int64
}

const reportedKiBFile = "/sys/module/page_reporting/parameters/reported_kib"

func readMemState() memState {
	m := memState{reclaims: -1, compactions: -1, reportedKiB: -1}
	if b, err := os.ReadFile("/proc/vmstat"); err == nil {
		m.reclaims, m.compactions = parseVMStat(string(b))
	}
	if b, err := os.ReadFile(reportedKiBFile); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			m.reportedKiB = n
		}
	}
	return m
}

// parseVMStat sums the direct reclaim stalls (allocstall_*) and reads
// compact_stall.
func parseVMStat(vmstat string) (reclaims, compactions int64) {
	for _, line := range strings.Split(vmstat, "\n") {
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

// memoryNote says whether the kernel stalled on memory during the run,
// and how much freed memory went back to the hypervisor.
func memoryNote(m0, m1 memState) string {
	var b strings.Builder
	if m0.reclaims >= 0 && m1.reclaims >= 0 {
		dr, dc := m1.reclaims-m0.reclaims, m1.compactions-m0.compactions
		if dr == 0 && dc == 0 {
			b.WriteString("Memory: no direct reclaim and no compaction stall during the run (/proc/vmstat).")
		} else {
			fmt.Fprintf(&b, "**Memory pressure during the run:** %d direct reclaims and %d compaction stalls (/proc/vmstat). "+
				"File writes may have cost several times their usual CPU; compare ratios within this run only.", dr, dc)
		}
	}
	if m0.reportedKiB >= 0 && m1.reportedKiB >= 0 {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "Free page reporting: %s of freed memory went back to the hypervisor during the run (`%s`); "+
			"memory the processes touch again after that is faulted in by the host, and page-cache writes into it cost up to 30 times their CPU. "+
			"Compare ratios within this run only.", fmtBytes(float64(m1.reportedKiB-m0.reportedKiB)*1024), reportedKiBFile)
	}
	if b.Len() == 0 {
		return ""
	}
	return b.String() + "\n\n"
}
