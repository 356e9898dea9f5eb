package downstream

import (
	"testing"

	"github.com/content-cache/content-cache/downstream/internal/config"
)

func TestParsePrefetch(t *testing.T) {
	for _, tc := range []struct {
		value any
		want  config.Prefetch
	}{
		{true, config.Prefetch{Enabled: true, PerManifest: 32, Total: 64}},
		{false, config.Prefetch{PerManifest: 32, Total: 64}},
		{map[any]any{"permanifest": 4}, config.Prefetch{Enabled: true, PerManifest: 4, Total: 64}},
		{map[any]any{"permanifest": 4, "total": 9}, config.Prefetch{Enabled: true, PerManifest: 4, Total: 9}},
	} {
		c, err := ParseOptions(origin(map[string]any{"prefetch": tc.value}))
		if err != nil {
			t.Fatalf("prefetch %v: %v", tc.value, err)
		}
		if c.Prefetch != tc.want {
			t.Errorf("prefetch %v: %+v, want %+v", tc.value, c.Prefetch, tc.want)
		}
	}
}

func TestParsePrefetchErrors(t *testing.T) {
	for _, tc := range []struct {
		value any
		want  string
	}{
		{"yes", `downstream: option "prefetch": found string "yes", expected true, false, or {permanifest: N, total: M} (positive integers; the map form turns prefetch on)`},
		{map[any]any{"permanifest": 0}, `downstream: option "prefetch.permanifest": found integer 0, expected a positive integer`},
		{map[any]any{"total": "many"}, `downstream: option "prefetch.total": found string "many", expected a positive integer`},
		{map[any]any{"layers": 3}, `downstream: option "prefetch": unknown key "layers"; valid keys are permanifest, total`},
	} {
		_, err := ParseOptions(origin(map[string]any{"prefetch": tc.value}))
		if err == nil || err.Error() != tc.want {
			t.Errorf("prefetch %v: error %v\nwant %s", tc.value, err, tc.want)
		}
	}
}
