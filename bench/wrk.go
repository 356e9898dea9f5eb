package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrk (Debian) is the warm-load scenario's load generator: a process of
// its own, so that its CPU is never charged to the server measured.

// wrkResult is what one wrk run reports (its done() hook, wrkScript).
type wrkResult struct {
	requests int64
	bytes    int64 // read from the sockets: headers and bodies
	duration time.Duration
	errors   int64 // connect, read, write and timeouts
	status   int64 // responses with a status above 399
	cpu      time.Duration
}

// wrkScript is the Lua script of a run: requests rotate over paths
// (formatted once per thread), and done() prints one line parseWrk reads.
func wrkScript(paths []string) string {
	q := make([]string, len(paths))
	for i, p := range paths {
		q[i] = strconv.Quote(p)
	}
	return `local paths = {` + strings.Join(q, ", ") + `}
local reqs = {}
local i = 0
function init(args)
  for _, p in ipairs(paths) do reqs[#reqs + 1] = wrk.format("GET", p) end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("wrk-result requests=%d bytes=%d duration_us=%d errors=%d status=%d\n",
    summary.requests, summary.bytes, summary.duration, e.connect + e.read + e.write + e.timeout, e.status))
end
`
}

// parseWrk reads the line of wrkScript's done() from wrk's output.
func parseWrk(out string) (wrkResult, error) {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "wrk-result ")
		if !ok {
			continue
		}
		var r wrkResult
		fields := map[string]*int64{"requests": &r.requests, "bytes": &r.bytes, "errors": &r.errors, "status": &r.status}
		var us int64
		fields["duration_us"] = &us
		seen := 0
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, "=")
			p, known := fields[k]
			if !known {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return wrkResult{}, fmt.Errorf("wrk result %q: %s is not a number", rest, k)
			}
			*p = n
			seen++
		}
		if seen != len(fields) {
			return wrkResult{}, fmt.Errorf("wrk result %q: want %d fields, got %d", rest, len(fields), seen)
		}
		r.duration = time.Duration(us) * time.Microsecond
		if r.duration <= 0 {
			return wrkResult{}, fmt.Errorf("wrk result %q: no duration", rest)
		}
		return r, nil
	}
	return wrkResult{}, fmt.Errorf("no wrk-result line in wrk's output: %s", lastLines(out, 5))
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}

// wrkRun is one wrk run from namespace ns against base (scheme://host:port)
// with conns connections for d, rotating over paths, with an Authorization
// header (nginx ignores it).
type wrkRun struct {
	ns, base  string
	paths     []string
	conns     int
	d         time.Duration
	auth      string
	scriptDir string
}

func (w wrkRun) run(ctx context.Context) (wrkResult, error) {
	script := filepath.Join(w.scriptDir, fmt.Sprintf("wrk-%d.lua", len(w.paths)))
	if err := os.WriteFile(script, []byte(wrkScript(w.paths)), 0o644); err != nil {
		return wrkResult{}, err
	}
	threads := min(w.conns, 2)
	args := []string{"netns", "exec", w.ns, "wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(w.conns),
		"-d", fmt.Sprintf("%.0fs", w.d.Seconds()), "--timeout", "30s", "-s", script, "-H", "Authorization: " + w.auth, w.base + "/"}
	cmd := exec.CommandContext(ctx, "ip", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %v: %s", w.base, err, lastLines(string(out), 5))
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return r, err
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if r.errors > 0 || r.status > 0 {
		return r, fmt.Errorf("wrk %s: %d socket errors, %d error statuses of %d requests", w.base, r.errors, r.status, r.requests)
	}
	return r, nil
}
