package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHasMemoryController(t *testing.T) {
	v1, v2, none := t.TempDir(), t.TempDir(), t.TempDir()
	write := func(dir, name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(v1, "memory.limit_in_bytes", "9223372036854771712\n")
	write(v2, "cgroup.controllers", "cpuset cpu io memory pids\n")
	write(none, "cgroup.controllers", "hugetlb\n")
	for _, c := range []struct {
		root, file string
		want       bool
	}{
		{v1, "memory.limit_in_bytes", true},
		{v2, "memory.max", true},
		{none, "memory.max", false},
		{none, "memory.limit_in_bytes", false},
	} {
		if got := hasMemoryController(c.root, c.file); got != c.want {
			t.Errorf("hasMemoryController(%s, %s) = %v, want %v", c.root, c.file, got, c.want)
		}
	}
	if note, err := confineMemory(0); err != nil || !strings.Contains(note, "not confined") {
		t.Errorf("confineMemory(0) = %q, %v; want a note that nothing is confined", note, err)
	}
}

func TestMemLimitFlag(t *testing.T) {
	for in, want := range map[string]memLimit{"4GiB": 4 << 30, "512MiB": 512 << 20, "0": 0, "off": 0} {
		var m memLimit
		if err := m.Set(in); err != nil || m != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, m, err, want)
		}
	}
	var m memLimit
	if err := m.Set("-1GiB"); err == nil || !strings.Contains(err.Error(), "or 0 to run without a memory cgroup") {
		t.Errorf("Set(-1GiB): %v, want the expected forms", err)
	}
}
