package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The load generator of the replicas scenario: n clients, each with
// connections of its own as separate hosts would have, start pulling one
// image at the same moment, as dockerd and containerd do (pullImage). It
// runs as a process of its own (the bench runs itself with -loadgen-base),
// so that its CPU is counted apart from the servers' and from the
// harness's, where the WAN shaper runs. A pull is done when its last byte
// has arrived; every body's length is checked, and the digests of every
// verify-th client's bodies (client 0 always), since hashing is each
// client's own CPU on its own host, not the servers'.

// loadgenSpec is one burst of pulls.
type loadgenSpec struct {
	base     string // scheme://host:port
	ref      string // repo:tag
	clients  int
	verify   int // every verify-th client checks digests (0: none)
	deadline time.Duration
}

// loadgenResult is what the load generator prints (JSON, one line).
type loadgenResult struct {
	Seconds  []float64 `json:"seconds"`  // per client, from the common start to its last byte
	Bytes    int64     `json:"bytes"`    // blob bytes received, all clients
	Verified int       `json:"verified"` // clients whose digests were checked
	// Per client, when (from the start, in seconds) the manifest's and
	// the config's last bytes came, the first layer byte, and the last
	// layer's first byte: where the clients waited.
	Manifest  []float64 `json:"manifest"`
	Config    []float64 `json:"config"`
	FirstByte []float64 `json:"first_byte"`
	LastStart []float64 `json:"last_start"`
}

func (s loadgenSpec) args() []string {
	return []string{"-loadgen-base", s.base, "-loadgen-ref", s.ref, "-loadgen-clients", strconv.Itoa(s.clients),
		"-loadgen-verify", strconv.Itoa(s.verify), "-loadgen-deadline", s.deadline.String()}
}

// loadgenMain is the load generator's process.
func loadgenMain(s loadgenSpec) error {
	repo, tag, ok := strings.Cut(s.ref, ":")
	if !ok || s.clients < 1 {
		return fmt.Errorf("-loadgen-ref %q, -loadgen-clients %d: expected repo:tag and at least 1", s.ref, s.clients)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.deadline)
	defer cancel()
	clients := make([]*http.Client, s.clients)
	for i := range clients {
		clients[i] = newHTTPClient()
	}
	n := s.clients
	res := loadgenResult{Seconds: make([]float64, n), Manifest: make([]float64, n), Config: make([]float64, n), FirstByte: make([]float64, n), LastStart: make([]float64, n)}
	errs := make([]error, n)
	got := make([]pullStats, n)
	gate := make(chan struct{})
	var start time.Time // set before the gate opens
	var wg sync.WaitGroup
	for i := range s.clients {
		verify := s.verify > 0 && i%s.verify == 0
		if verify {
			res.Verified++
		}
		wg.Go(func() {
			<-gate
			got[i], errs[i] = pullImage(ctx, clients[i], s.base, repo, tag, pullJobs, verify)
			res.Seconds[i] = time.Since(start).Seconds()
		})
	}
	start = time.Now()
	close(gate)
	wg.Wait()
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Errorf("client %d: %w", i, err))
		}
		res.Bytes += got[i].bytes
		res.Manifest[i], res.Config[i] = got[i].manifest.Seconds(), got[i].config.Seconds()
		res.FirstByte[i], res.LastStart[i] = got[i].firstByte.Seconds(), got[i].lastStart.Seconds()
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d pulls failed: %w", len(failed), s.clients, errors.Join(failed[:min(3, len(failed))]...))
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// runLoadgen runs the load generator and returns its result and its CPU
// time (user and system, from wait4).
func runLoadgen(ctx context.Context, s loadgenSpec) (loadgenResult, time.Duration, error) {
	exe, err := os.Executable()
	if err != nil {
		return loadgenResult{}, 0, err
	}
	cmd := exec.CommandContext(ctx, exe, s.args()...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return loadgenResult{}, 0, fmt.Errorf("the load generator: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var r loadgenResult
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		return loadgenResult{}, 0, fmt.Errorf("the load generator's output %q: %w", stdout.String(), err)
	}
	if len(r.Seconds) != s.clients {
		return loadgenResult{}, 0, fmt.Errorf("the load generator timed %d pulls, want %d", len(r.Seconds), s.clients)
	}
	return r, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), nil
}
