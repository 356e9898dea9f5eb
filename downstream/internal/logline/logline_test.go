package logline

import (
	"bytes"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// timeValue is the timestamp of a line (it differs between two lines),
// and the caller (the fast path's own function, where logrus' is its
// caller's).
var timeValue = regexp.MustCompile(`"(time|@timestamp|file|func)":"[^"]*"`)

// Lines are byte for byte logrus' own, for the JSON formatters
// distribution configures (json, logstash), logrus' default JSON one and
// the test's, with odd strings, the entry's own fields (an error among
// them) and integers.
func TestSameBytesAsLogrus(t *testing.T) {
	formatters := map[string]*logrus.JSONFormatter{
		"distribution json": {TimestampFormat: time.RFC3339Nano, DisableHTMLEscape: true},
		"logstash":          {TimestampFormat: time.RFC3339Nano, FieldMap: logrus.FieldMap{logrus.FieldKeyFunc: "function"}},
		"default":           {},
		"renamed keys":      {FieldMap: logrus.FieldMap{logrus.FieldKeyTime: "@timestamp", logrus.FieldKeyMsg: "message"}},
		"no time":           {DisableTimestamp: true},
	}
	values := []string{"", "plain", `quote " and \ back`, "<html> & co", "tab\tnew\nline\x01", "é ü \u2028", "\xff bad utf-8"}
	for name, f := range formatters {
		for _, v := range values {
			lg := logrus.New()
			var out bytes.Buffer
			lg.SetOutput(&out)
			lg.SetFormatter(f)
			entry := lg.WithFields(logrus.Fields{"component": "downstream", "err": errors.New("an <error>"), "n": 3, "v": v})
			fields := []Field{String("method", "GET"), String("repository", v), Int("status", 200), Int("bytes", -4096), String("zz", v)}
			l := New(entry)
			if !l.ok || l.mu == nil {
				t.Fatalf("%s: the fast path is off (logrus changed?)", name)
			}
			l.Info("request", fields...)
			fast := out.String()
			out.Reset()
			l.slow("request", fields)
			slow := out.String()
			if timeValue.ReplaceAllString(fast, "T") != timeValue.ReplaceAllString(slow, "T") {
				t.Errorf("%s, %q:\n fast %s\nlogrus %s", name, v, fast, slow)
			}
		}
	}
}

// Whatever the fast path cannot write the same goes through logrus: a
// field named like logrus' own keys, hooks, caller reporting, the text
// formatter; a disabled level writes nothing.
func TestThroughLogrus(t *testing.T) {
	cases := map[string]func(*logrus.Logger) []Field{
		"clash":  func(*logrus.Logger) []Field { return []Field{String("msg", "x")} },
		"hook":   func(lg *logrus.Logger) []Field { lg.AddHook(hook{}); return nil },
		"caller": func(lg *logrus.Logger) []Field { lg.SetReportCaller(true); return nil },
		"text": func(lg *logrus.Logger) []Field {
			lg.SetFormatter(&logrus.TextFormatter{DisableColors: true})
			return nil
		},
	}
	for name, setup := range cases {
		lg := logrus.New()
		var out bytes.Buffer
		lg.SetOutput(&out)
		lg.SetFormatter(&logrus.JSONFormatter{})
		fields := setup(lg)
		New(lg.WithField("a", "b")).Info("m", fields...)
		fast := timeValue.ReplaceAllString(out.String(), "T")
		out.Reset()
		lg.WithField("a", "b").WithFields(toFields(fields)).Info("m")
		want := regexp.MustCompile(`time="[^"]*"`).ReplaceAllString(timeValue.ReplaceAllString(out.String(), "T"), "T")
		if got := regexp.MustCompile(`time="[^"]*"`).ReplaceAllString(fast, "T"); got != want || got == "" {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	lg := logrus.New()
	var out bytes.Buffer
	lg.SetOutput(&out)
	lg.SetFormatter(&logrus.JSONFormatter{})
	lg.SetLevel(logrus.WarnLevel)
	New(logrus.NewEntry(lg)).Info("m")
	if out.Len() != 0 {
		t.Errorf("info written at warn level: %s", out.String())
	}
}

type hook struct{}

func (hook) Levels() []logrus.Level   { return logrus.AllLevels }
func (hook) Fire(*logrus.Entry) error { return nil }

func toFields(fs []Field) logrus.Fields {
	m := logrus.Fields{}
	for _, f := range fs {
		m[f.Key] = f.Str
	}
	return m
}

// One line costs a few allocations at most, where logrus' cost dozens.
func BenchmarkInfo(b *testing.B) {
	lg := logrus.New()
	lg.SetOutput(discard{})
	lg.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano, DisableHTMLEscape: true})
	l := New(lg.WithField("component", "downstream"))
	fields := []Field{String("method", "GET"), String("kind", "blob"), String("result", "hit"), Int("status", 200), Int("bytes", 4096),
		String("duration", "12µs"), String("registry", "origin.example"), String("repository", "library/alpine"),
		String("digest", "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")}
	b.Run("logline", func(b *testing.B) {
		for b.Loop() {
			l.Info("request", fields...)
		}
	})
	b.Run("logrus", func(b *testing.B) {
		for b.Loop() {
			l.slow("request", fields)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
