package registry

import (
	"os"

	"github.com/content-cache/content-cache/internal/logbatch"
	"github.com/sirupsen/logrus"
)

// batchLogs sends lg's output through a logbatch.Writer (a write system
// call per request line was a sixth of a small hit's CPU) until the
// returned function, which writes what is pending and restores the
// output. A fatal log (logrus' Exit) writes the pending lines, its own
// included, before the process ends.
func batchLogs(lg *logrus.Logger) (restore func()) {
	logs, exit := logbatch.New(lg.Out), lg.ExitFunc
	lg.SetOutput(logs)
	lg.ExitFunc = func(code int) {
		_ = logs.Close()
		if exit == nil {
			os.Exit(code)
		}
		exit(code)
	}
	return func() {
		_ = logs.Close()
		lg.SetOutput(logs.Unwrap())
		lg.ExitFunc = exit
	}
}
