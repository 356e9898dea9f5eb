package main

import "testing"

func TestImageShapesFlag(t *testing.T) {
	var s imageShapes
	if err := s.Set("12x512KiB, 8x18MiB"); err != nil {
		t.Fatal(err)
	}
	if len(s) != 2 || s[0] != (imageShape{12, 512 << 10}) || s[1] != (imageShape{8, 18 << 20}) {
		t.Fatalf("parsed %v", s)
	}
	if got := s.String(); got != "12x512KiB,8x18MiB" {
		t.Fatalf("String() = %q", got)
	}
	for _, bad := range []string{"", "12", "x512KiB", "0x1MiB", "3x", "3xlots", "-1x1MiB"} {
		if err := s.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}
