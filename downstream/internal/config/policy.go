package config

import (
	"fmt"
	"math"
	"math/bits"
	"path"
	"strconv"
	"strings"

	"github.com/content-cache/content-cache/downstream/internal/yamlopt"
)

// DefaultLowWatermark is the share of maxsize, in percent, that eviction
// brings stored data down to once it passed maxsize: room for a tenth of
// the bound to fill again before the next eviction.
const DefaultLowWatermark = 90

const sizeHelp = "a size in bytes such as 500GiB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; a bare integer counts bytes)"

// sizeUnit is the number of bytes of a unit ParseSize accepts,
// lower-cased; false for anything else.
func sizeUnit(unit string) (uint64, bool) {
	switch unit {
	case "", "b":
		return 1, true
	case "kb":
		return 1e3, true
	case "mb":
		return 1e6, true
	case "gb":
		return 1e9, true
	case "tb":
		return 1e12, true
	case "kib":
		return 1 << 10, true
	case "mib":
		return 1 << 20, true
	case "gib":
		return 1 << 30, true
	case "tib":
		return 1 << 40, true
	}
	return 0, false
}

// ParseSize reads a size: a non-negative integer with an optional unit,
// decimal (KB = 1000 bytes ... TB) or binary (KiB = 1024 bytes ... TiB),
// case-insensitive, spaces allowed around and between. A bare integer
// counts bytes.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q does not start with a number", s)
	}
	n, err := strconv.ParseUint(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is too large", s)
	}
	unit := strings.ToLower(strings.TrimSpace(s[i:]))
	mult, ok := sizeUnit(unit)
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q", s, s[i:])
	}
	hi, lo := bits.Mul64(n, mult)
	if hi != 0 || lo > math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(lo), nil
}

func parseMaxSize(c *Config, v any) error {
	var n int64
	var err error
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int64:
		n = x
	case uint64:
		if x > math.MaxInt64 {
			err = fmt.Errorf("too large")
		}
		n = int64(x)
	case string:
		n, err = ParseSize(x)
	default:
		err = fmt.Errorf("not a size")
	}
	if err != nil || n <= 0 {
		return fmt.Errorf("downstream: option \"maxsize\": found %s, expected %s greater than 0", yamlopt.Describe(v), sizeHelp)
	}
	c.MaxSize = n
	return nil
}

const watermarkHelp = "a percentage of maxsize from 1% to 99% such as 90%"

func parseLowWatermark(c *Config, v any) error {
	p := -1
	switch x := v.(type) {
	case int:
		p = x
	case string:
		s := strings.TrimSpace(x)
		if t, ok := strings.CutSuffix(s, "%"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(t)); err == nil {
				p = n
			}
		}
	}
	if p < 1 || p > 99 {
		return fmt.Errorf("downstream: option \"lowwatermark\": found %s, expected %s", yamlopt.Describe(v), watermarkHelp)
	}
	c.LowWatermark = p
	return nil
}

const pinHelp = "a list of repository globs such as [\"base/*\", \"library/alpine\"] (path.Match syntax: * ? [a-z] within a path component)"

func parsePin(c *Config, v any) error {
	list, ok := v.([]any)
	if !ok {
		if v == nil {
			return nil
		}
		return fmt.Errorf("downstream: option \"pin\": found %s, expected %s", yamlopt.Describe(v), pinHelp)
	}
	for _, item := range list {
		s, ok := item.(string)
		if !ok || strings.TrimSpace(s) == "" {
			return fmt.Errorf("downstream: option \"pin\": found an item %s, expected a repository glob; the option is %s", yamlopt.Describe(item), pinHelp)
		}
		if _, err := path.Match(s, ""); err != nil {
			return fmt.Errorf("downstream: option \"pin\": %q is not a valid glob (%v); expected %s", s, err, pinHelp)
		}
		c.Pin = append(c.Pin, s)
	}
	return nil
}

// Pinned reports whether repo matches one of the pin globs.
func (c Config) Pinned(repo string) bool {
	for _, p := range c.Pin {
		if ok, _ := path.Match(p, repo); ok {
			return true
		}
	}
	return false
}
