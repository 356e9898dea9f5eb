package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// hostCPU is the machine's CPU time so far, from the first line of
// /proc/stat: busy (user, nice, system, irq, softirq, steal) and all
// (busy plus idle and iowait), in 10 ms ticks. The image pulls run crane,
// the origin and a cache on the same CPUs: when busy/all nears 1 the pull
// is bound by the CPU, and its time by the sum of their CPU times.
type hostCPU struct{ busy, all time.Duration }

func readHostCPU() (hostCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return hostCPU{}, err
	}
	return parseHostCPU(string(b))
}

func parseHostCPU(stat string) (hostCPU, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return hostCPU{}, fmt.Errorf("/proc/stat: first line %q is not the cpu total", line)
	}
	var v [8]int64 // user nice system idle iowait irq softirq steal
	for i := range v {
		n, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil {
			return hostCPU{}, fmt.Errorf("/proc/stat: field %d of %q: %v", i+1, line, err)
		}
		v[i] = n
	}
	const tick = 10 * time.Millisecond // USER_HZ
	busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return hostCPU{busy: time.Duration(busy) * tick, all: time.Duration(busy+v[3]+v[4]) * tick}, nil
}

// sub is the CPU time between h0 and h.
func (h hostCPU) sub(h0 hostCPU) hostCPU { return hostCPU{h.busy - h0.busy, h.all - h0.all} }

// share is the busy part of the time, 0 to 1 (NaN when no tick passed).
func (h hostCPU) share() float64 {
	if h.all <= 0 {
		return math.NaN()
	}
	return float64(h.busy) / float64(h.all)
}

// cpuBudgetTable says where the CPU of the loopback image pulls went:
// crane, the origin, the serving cache and the rest of the machine (kernel
// work charged to no process, the harness), and how busy the CPUs were. A
// cold pull through a cache on a machine this small is bound by the CPU:
// the table ends with the most CPU a cache could use per MiB and still
// pull in 0.8× distribution proxy's time.
func (b *bench) cpuBudgetTable(s series, ts []target) {
	ncpu := float64(runtime.NumCPU())
	t := &table{head: []string{"", "pull", "time", "CPUs busy", "crane", "origin", "the cache", "the rest", "all"},
		align: []string{"l", "l", "r", "r", "r", "r", "r", "r", "r"}}
	row := func(label, phase, n string) {
		crane, origin, host := s.med(n+" crane cpu"), s.med(n+" origin cpu"), s.med(n+" host cpu")
		cache := math.NaN()
		rest := host - crane - origin
		if n != "direct" {
			cache = s.med(n + " cpu")
			rest -= cache
		}
		t.row(label, phase, fmtSec(s.med(n)), fmt.Sprintf("%.2f of %.0f", s.med(n+" host busy")*ncpu, ncpu),
			fmtMS(crane), fmtMS(origin), fmtMS(cache), fmtMS(rest), fmtMS(host))
	}
	row(ts[0].label, "–", "direct")
	for _, c := range imageCaches(ts) {
		row(c.t.label, "cold", c.name+" cold")
	}
	fmt.Fprintf(&b.md, "#### Where the CPU of the cold image pulls went (per MiB of the image)\n\n%s\n", t)
	mib := float64(int(b.o.imageSize)/b.o.imageLayers*b.o.imageLayers) / (1 << 20)
	goal := 0.8 * s.med("proxy cold") // seconds
	// Everything but the cache: crane, the origin and the rest.
	others := s.med("cache cold host cpu") - s.med("cache cold cpu")
	left := goal*ncpu*1e3/mib - others
	fmt.Fprintf(&b.md, "CPUs busy: the machine's busy time during the pull (/proc/stat) over its wall time. crane: from wait4; origin and the cache: /proc/PID/stat (10 ms ticks); "+
		"the rest: the machine's busy time charged to none of them (softirq, the harness). "+
		"At 0.8× the proxy's cold pull time (%s), with all %.0f CPUs busy throughout and crane, the origin and the rest using what they used through content-cache, "+
		"a cache could use at most **%s per MiB**; content-cache used %s, distribution's proxy %s.\n\n",
		fmtSec(goal), ncpu, fmtMS(left), fmtMS(s.med("cache cold cpu")), fmtMS(s.med("proxy cold cpu")))
}
