// Package yamlopt reads the values of a middleware's options as YAML
// delivered them (distribution hands middlewares a map[string]any), for
// the option parsers of the cache and of the origin side: one reading of
// durations, mappings and key lists, and one way of naming a bad value in
// an error message.
package yamlopt

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TypeName names a YAML value's type for error messages.
func TypeName(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "string"
	case int, int64, uint64, int32, uint, uint32:
		return "integer"
	case float64, float32:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "list"
	case map[any]any, map[string]any:
		return "mapping"
	}
	return reflect.TypeOf(v).String()
}

// Describe names a value and its type: `string "1d"`, `integer 5`.
func Describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "nothing"
	case string:
		return fmt.Sprintf("string %q", x)
	}
	return fmt.Sprintf("%s %v", TypeName(v), v)
}

// Duration reads a duration as the DTR documents blobttl: a non-negative
// integer of nanoseconds, or a Go duration with the units ns, us, ms, s,
// m, h. Zero is accepted only with allowZero; ok is false otherwise.
func Duration(v any, allowZero bool) (d time.Duration, ok bool) {
	switch x := v.(type) {
	case int:
		d = time.Duration(x)
	case int64:
		d = time.Duration(x)
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		d = time.Duration(x)
	case string:
		s := strings.TrimSpace(x)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			d = time.Duration(n)
			break
		}
		parsed, err := time.ParseDuration(s)
		if err != nil || strings.ContainsAny(s, "µμ") {
			return 0, false
		}
		d = parsed
	default:
		return 0, false
	}
	if d < 0 || (d == 0 && !allowZero) {
		return 0, false
	}
	return d, true
}

// StringKeyed returns a YAML mapping with string keys; ok is false for
// anything else, or a key that is not a string (bad is then that key).
func StringKeyed(v any) (m map[string]any, bad any, ok bool) {
	switch x := v.(type) {
	case map[string]any:
		return x, nil, true
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			ks, isString := k.(string)
			if !isString {
				return nil, k, false
			}
			out[ks] = val
		}
		return out, nil, true
	}
	return nil, nil, false
}

// Keys lists a map's keys, sorted, comma-separated: the valid options of
// an "unknown option" error.
func Keys[V any](known map[string]V) string {
	keys := make([]string, 0, len(known))
	for k := range known {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}
