package registry

import (
	"strings"
	"testing"

	"github.com/content-cache/content-cache/internal/regtest"
	"github.com/sirupsen/logrus"
)

// A fatal line reaches the output before the process would exit, with the
// lines before it; restoring puts the logger back as it was.
func TestBatchLogsWriteBeforeFatalExit(t *testing.T) {
	out := &regtest.Buffer{}
	lg := logrus.New()
	lg.SetOutput(out)
	exited := -1
	var atExit string
	lg.ExitFunc = func(code int) { exited, atExit = code, out.String() }
	restore := batchLogs(lg)
	lg.Info("before")
	// What lg.Fatal does, its exit handlers aside (staticcheck takes
	// Fatal and Exit for the end of the function).
	lg.Log(logrus.FatalLevel, "the end")
	lg.ExitFunc(1)
	restore()
	if exited != 1 {
		t.Fatalf("exit code %d, want 1", exited)
	}
	if !strings.Contains(atExit, "before") || !strings.Contains(atExit, "the end") {
		t.Fatalf("output when the process exits: %q; want both lines", atExit)
	}
	if lg.Out != out {
		t.Fatal("the output was not restored")
	}
	lg.Info("after")
	if !strings.Contains(out.String(), "after") {
		t.Fatal("a line after restoring did not reach the output")
	}
}
