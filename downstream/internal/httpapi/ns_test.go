package httpapi

import (
	"net/url"
	"testing"
)

func TestSameRegistry(t *testing.T) {
	for _, tc := range []struct {
		ns, origin string
		want       bool
	}{
		{"registry.example.com", "https://registry.example.com", true},
		{"registry.example.com:443", "https://registry.example.com", true},
		{"registry.example.com", "https://registry.example.com:443", true},
		{"Registry.Example.COM", "https://registry.example.com", true},
		{"registry.example.com:80", "https://registry.example.com", false},
		{"registry.example.com:5000", "https://registry.example.com", false},
		{"registry.example.com", "https://registry.example.com:5000", false},
		{"registry.example.com:5000", "http://registry.example.com:5000", true},
		{"registry.example.com:80", "http://registry.example.com", true},
		{"registry.example.com", "http://registry.example.com:80", true},
		{"registry.example.com:443", "http://registry.example.com", false},
		{"docker.io", "https://registry-1.docker.io", true},
		{"docker.io", "https://index.docker.io", true},
		{"docker.io:443", "https://registry-1.docker.io", true},
		{"registry-1.docker.io", "https://index.docker.io", true},
		{"docker.io", "https://mirror.gcr.io", false},
		{"ghcr.io", "https://registry-1.docker.io", false},
		{"example.com", "https://registry.example.com", false},
		{":443", "https://registry.example.com", false},
	} {
		u, err := url.Parse(tc.origin)
		if err != nil {
			t.Fatal(err)
		}
		if got := sameRegistry(tc.ns, u); got != tc.want {
			t.Errorf("sameRegistry(%q, %s) = %v, want %v", tc.ns, tc.origin, got, tc.want)
		}
	}
}
