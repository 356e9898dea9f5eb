package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// The ns query parameter (OCI distribution-spec, "Registry Proxying") names
// the registry a mirror is asked for. containerd sends it on every request
// to a mirror of hosts.toml. The cache mirrors one origin only: another
// registry's name must not get the origin's content under that name.

// wrongNamespace returns the ns the request names when it is not the
// origin's, or "" when the request may go on (no ns, or the origin's).
func wrongNamespace(r *http.Request, origin *url.URL) string {
	for _, ns := range r.URL.Query()["ns"] {
		if ns != "" && !sameRegistry(ns, origin) {
			return ns
		}
	}
	return ""
}

// sameRegistry reports whether ns (host[:port], no scheme) names origin:
// the same host and port, the default port of origin's scheme counting as
// absent. Docker Hub answers to several names.
func sameRegistry(ns string, origin *url.URL) bool {
	norm := func(hostport string) string {
		hostport = strings.ToLower(strings.TrimSuffix(hostport, "."))
		if h, ok := strings.CutSuffix(hostport, defaultPort(origin.Scheme)); ok && h != "" {
			hostport = h
		}
		switch hostport {
		case "docker.io", "registry-1.docker.io", "index.docker.io", "registry.hub.docker.com":
			return "docker.io"
		}
		return hostport
	}
	return norm(ns) == norm(origin.Host)
}

func defaultPort(scheme string) string {
	if scheme == "http" {
		return ":80"
	}
	return ":443"
}

// errNamespace is the answer to an ns that is not the origin's: 404, so
// that containerd goes on to the next host of hosts.toml.
func errNamespace(ns string, origin *url.URL) error {
	return errcode.ErrorCodeNameUnknown.WithMessage(fmt.Sprintf(
		"this content cache mirrors %s only; the request names registry %q (query parameter ns)", origin.Host, ns)).
		WithDetail(map[string]string{"ns": ns, "origin": origin.Host})
}
