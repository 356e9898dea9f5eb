package main

import (
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The process CPU clock of another process is read through its pid's
// clock id: for this process, it agrees with the clock of the calling
// process, and with /proc's tick counts to within their 10 ms ticks.
func TestCPUTimeIsTheProcessCPUClock(t *testing.T) {
	// Burn some CPU, so that the readings are not all near zero.
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
		h.Write(buf)
	}
	var self unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &self); err != nil {
		t.Fatal(err)
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(processCPUClock(os.Getpid()), &ts); err != nil {
		t.Fatalf("the clock of pid %d: %v", os.Getpid(), err)
	}
	got, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Duration(ts.Nano() - self.Nano()); d < 0 || d > 20*time.Millisecond {
		t.Errorf("the pid's clock read %v, the calling process's %v", time.Duration(ts.Nano()), time.Duration(self.Nano()))
	}
	u, s, err := cpuTimes(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := got - (u + s); d < -20*time.Millisecond || d > 40*time.Millisecond {
		t.Errorf("cpuTime %v, /proc's ticks %v", got, u+s)
	}
	if got < 50*time.Millisecond {
		t.Errorf("cpuTime %v after 50 ms of hashing", got)
	}
}
