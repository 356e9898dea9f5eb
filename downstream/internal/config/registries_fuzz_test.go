package config

import (
	"strings"
	"testing"

	"github.com/distribution/reference"
)

// An ns that parses is canonical (parsing it again gives it back), lower
// case, one host with at most one port, and prefixes a valid repository
// name; every name of Docker Hub is docker.io.
func FuzzNS(f *testing.F) {
	for _, s := range []string{
		"docker.io", "Docker.IO", "index.docker.io", "registry-1.docker.io:443", "ghcr.io:443", "localhost:5000",
		"127.0.0.1:15000:80", "[::1]:5000", "::1", "https://ghcr.io", "ghcr.io/org", "", ":443", "a..b", "-a.io",
		"x.io:0", "x.io:65536", "x.io:0443", "[fe80::1%eth0]:5000", "host.", "ñ.io",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ns string) {
		out, err := NS(ns)
		if err != nil {
			if !strings.Contains(err.Error(), "is not a registry host[:port]") {
				t.Fatalf("NS(%q) error %q does not say what is expected", ns, err)
			}
			return
		}
		if again, err := NS(out); err != nil || again != out {
			t.Fatalf("NS(%q) = %q, not canonical: NS again = %q, %v", ns, out, again, err)
		}
		if out != strings.ToLower(out) || strings.ContainsAny(out, "/@?#") || strings.HasSuffix(out, ":443") {
			t.Fatalf("NS(%q) = %q", ns, out)
		}
		if strings.Count(out[strings.LastIndex(out, "]")+1:], ":") > 1 {
			t.Fatalf("NS(%q) = %q has two ports", ns, out)
		}
		if _, err := reference.WithName(strings.ReplaceAll(out, ":", "_") + "/library/app"); err != nil {
			t.Fatalf("NS(%q) = %q prefixes no repository name: %v", ns, out, err)
		}
		switch strings.TrimSuffix(strings.ToLower(ns), ":443") {
		case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
			if out != "docker.io" {
				t.Fatalf("NS(%q) = %q, want docker.io", ns, out)
			}
		}
	})
}
