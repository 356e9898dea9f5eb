// Package logline writes info lines of a few string and integer fields,
// the cache's one line per request, byte for byte as logrus would, at a
// fraction of its CPU when the logger formats JSON: logrus copies its
// fields into three maps and encodes them by reflection, a sixth of a
// small hit's CPU (`bench -only warm-load -cpuprofile`, 8 × 4 KiB, 64
// clients). Lines go to the logger's Out under the logger's own lock, with
// its level, formatter and hooks read under that lock on every line, so
// that a change of output, level or formatter applies at once. Any other
// formatter, hooks, caller reporting, or a field that clashes with logrus'
// own keys, goes through logrus itself.
package logline

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
)

// Field is a string or integer field of a line.
type Field struct {
	Key string
	Str string
	Int int64
	num bool
}

// String is a string field.
func String(k, v string) Field { return Field{Key: k, Str: v} }

// Int is an integer field.
func Int(k string, v int64) Field { return Field{Key: k, Int: v, num: true} }

// Logger writes lines through one logrus entry (its logger and its
// fields).
type Logger struct {
	entry *logrus.Entry
	mu    sync.Locker // the logger's own lock; nil: always through logrus
	base  []kv        // the entry's fields, encoded (nil values: not encodable here)
	ok    bool        // the entry's fields are all encodable here
	bufs  sync.Pool
}

type kv struct {
	key string
	val []byte // JSON, HTML-escaped
	raw []byte // JSON, not HTML-escaped
}

// New is a Logger writing through entry.
func New(entry *logrus.Entry) *Logger {
	l := &Logger{entry: entry, mu: loggerLock(entry.Logger), ok: true}
	l.bufs.New = func() any { b := make([]byte, 0, 512); return &b }
	ev := reflect.ValueOf(entry).Elem()
	if f := ev.FieldByName("err"); !f.IsValid() || f.Kind() != reflect.String || f.String() != "" || !entry.Time.IsZero() {
		l.ok = false // logrus would add logrus_error, or the entry has its own time
	}
	for k, v := range entry.Data {
		if e, isErr := v.(error); isErr {
			v = e.Error()
		}
		val, err1 := encode(v, true)
		raw, err2 := encode(v, false)
		if err1 != nil || err2 != nil {
			l.ok = false
			continue
		}
		l.base = append(l.base, kv{key: k, val: val, raw: raw})
	}
	return l
}

// loggerLock is the logger's lock (its unexported mu, whose pointer has
// Lock and Unlock), nil when logrus no longer has it (a test fails then).
func loggerLock(lg *logrus.Logger) sync.Locker {
	f := reflect.ValueOf(lg).Elem().FieldByName("mu")
	if !f.IsValid() || f.Kind() != reflect.Struct {
		return nil
	}
	l, _ := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Interface().(sync.Locker)
	return l
}

// encode is v in JSON as encoding/json's Encoder writes it inside logrus'
// map (HTML-escaped or not).
func encode(v any, escapeHTML bool) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Info writes an info line of msg and fields (keys distinct, and distinct
// from the entry's).
func (l *Logger) Info(msg string, fields ...Field) {
	lg := l.entry.Logger
	if !lg.IsLevelEnabled(logrus.InfoLevel) {
		return
	}
	if l.mu == nil || !l.ok {
		l.slow(msg, fields)
		return
	}
	l.mu.Lock()
	f, json := lg.Formatter.(*logrus.JSONFormatter)
	fast := json && !lg.ReportCaller && len(lg.Hooks[logrus.InfoLevel]) == 0
	l.mu.Unlock()
	if !fast || f.DataKey != "" || f.PrettyPrint {
		l.slow(msg, fields)
		return
	}
	bp := l.bufs.Get().(*[]byte)
	defer l.bufs.Put(bp)
	b, ok := l.format((*bp)[:0], f, msg, fields)
	if !ok {
		l.slow(msg, fields)
		return
	}
	*bp = b
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = lg.Out.Write(b) // as logrus: a failed log write fails nothing else
}

// slow writes through logrus.
func (l *Logger) slow(msg string, fields []Field) {
	m := make(logrus.Fields, len(fields))
	for _, f := range fields {
		if f.num {
			m[f.Key] = f.Int
		} else {
			m[f.Key] = f.Str
		}
	}
	l.entry.WithFields(m).Info(msg)
}

// item is one key of a line and where its value is.
type item struct {
	key   string
	field int // index in fields, or -1 - index in base, or one of the builtins
}

const (
	itemTime = -1000 - iota
	itemMsg
	itemLevel
)

// format appends the line JSONFormatter.Format would write; false when it
// cannot here (a key clash, too many fields).
func (l *Logger) format(b []byte, f *logrus.JSONFormatter, msg string, fields []Field) ([]byte, bool) {
	resolve := func(k string) string { // FieldMap's resolve
		for fk, v := range f.FieldMap {
			if string(fk) == k {
				return v
			}
		}
		return k
	}
	timeKey, msgKey, levelKey, errKey := resolve(string(logrus.FieldKeyTime)), resolve(string(logrus.FieldKeyMsg)),
		resolve(string(logrus.FieldKeyLevel)), resolve(string(logrus.FieldKeyLogrusError))
	var items [32]item
	n := 0
	add := func(k string, at int) bool {
		if n == len(items) || k == timeKey || k == msgKey || k == levelKey || k == errKey {
			return false // logrus would rename it (fields.KEY)
		}
		items[n] = item{k, at}
		n++
		return true
	}
	for i, kv := range l.base {
		if !add(kv.key, -1-i) {
			return b, false
		}
	}
	for i, fl := range fields {
		if !add(fl.Key, i) {
			return b, false
		}
	}
	if !f.DisableTimestamp {
		items[n] = item{timeKey, itemTime}
		n++
	}
	if n+2 > len(items) {
		return b, false
	}
	items[n], items[n+1] = item{msgKey, itemMsg}, item{levelKey, itemLevel}
	n += 2
	// encoding/json writes a map's keys sorted; a handful: insertion sort.
	for i := 1; i < n; i++ {
		for j := i; j > 0 && items[j].key < items[j-1].key; j-- {
			items[j], items[j-1] = items[j-1], items[j]
		}
	}
	for i := 1; i < n; i++ {
		if items[i].key == items[i-1].key {
			return b, false // a duplicate key: logrus' map would keep one
		}
	}
	esc := !f.DisableHTMLEscape
	b = append(b, '{')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, items[i].key, esc)
		b = append(b, ':')
		switch at := items[i].field; {
		case at == itemTime:
			ts := f.TimestampFormat
			if ts == "" {
				ts = time.RFC3339 // logrus' default
			}
			b = appendString(b, time.Now().Format(ts), esc)
		case at == itemMsg:
			b = appendString(b, msg, esc)
		case at == itemLevel:
			b = appendString(b, logrus.InfoLevel.String(), esc)
		case at < 0:
			if kv := l.base[-1-at]; esc {
				b = append(b, kv.val...)
			} else {
				b = append(b, kv.raw...)
			}
		case fields[at].num:
			b = strconv.AppendInt(b, fields[at].Int, 10)
		default:
			b = appendString(b, fields[at].Str, esc)
		}
	}
	return append(b, '}', '\n'), true
}

// appendString appends s as a JSON string exactly as encoding/json does:
// printable ASCII as is, anything else through encoding/json itself.
func appendString(b []byte, s string, escapeHTML bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || escapeHTML && (c == '<' || c == '>' || c == '&') {
			enc, err := encode(s, escapeHTML)
			if err != nil {
				return append(b, `""`...) // never: a string always encodes
			}
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
