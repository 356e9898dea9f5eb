package httpapi

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/downstream/internal/ident"
	"github.com/distribution/reference"

	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// The ns query parameter (OCI distribution-spec, "Registry Proxying") names
// the registry a request is for: containerd sends it on every request to a
// mirror of hosts.toml. A request with no ns, or with the default
// registry's, is the default registry's (Docker's registry-mirrors sends
// none); one naming a registry of the registries option is that
// registry's; any other ns is refused, never answered from another
// registry. Answers to a request with an ns carry it back in OCI-Namespace,
// as the spec says a registry that scopes requests by ns should.

// headerNamespace is the spec's response header.
const headerNamespace = "OCI-Namespace"

// nsRequest is what a request's ns says: the registry (ident's origin, ""
// for the default registry) and the ns as the client sent it ("" for
// none).
type nsRequest struct {
	registry string
	ns       string
}

// registryOf reads r's ns. Every non-empty ns of the request must name the
// same registry.
func (c *API) registryOf(r *http.Request) (nsRequest, error) {
	var out nsRequest
	first := true
	for _, ns := range r.URL.Query()["ns"] {
		if ns == "" {
			continue
		}
		reg, err := c.resolveNS(ns)
		if err != nil {
			return nsRequest{ns: ns}, err
		}
		if !first && reg != out.registry {
			return nsRequest{ns: out.ns}, errcode.ErrorCodeUnsupported.WithMessage(fmt.Sprintf(
				"the request names two registries, %q and %q (query parameter ns); expected one", out.ns, ns))
		}
		if first {
			out, first = nsRequest{registry: reg, ns: ns}, false
		}
	}
	return out, nil
}

// resolveNS is the registry ns names, or the error to answer.
func (c *API) resolveNS(ns string) (string, error) {
	canon, err := config.NS(ns)
	if err != nil {
		return "", errNamespaceInvalid(ns, err)
	}
	if sameRegistry(canon, c.cfg.Upstreams.Origin) {
		return "", nil
	}
	if _, ok := c.cfg.Registries[canon]; ok {
		return canon, nil
	}
	return "", errNamespace(ns, c.cfg)
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

// errNamespace is the answer to an ns that names no registry of the cache:
// 404, so that containerd goes on to the next host of hosts.toml.
func errNamespace(ns string, cfg config.Config) error {
	names := make([]string, 0, len(cfg.Registries)+1)
	names = append(names, cfg.Upstreams.Origin.Host)
	for n := range cfg.Registries {
		names = append(names, n)
	}
	sort.Strings(names[1:])
	what := "mirrors " + names[0] + " only"
	if len(names) > 1 {
		what = "serves the registries " + strings.Join(names, ", ") + " only"
	}
	return errcode.ErrorCodeNameUnknown.WithMessage(fmt.Sprintf(
		"this content cache %s; the request names registry %q (query parameter ns)", what, ns)).
		WithDetail(map[string]string{"ns": ns, "origin": cfg.Upstreams.Origin.Host, "registries": strings.Join(names, ",")})
}

// errNamespaceInvalid answers an ns that is no registry host[:port]: it
// is never read as some registry.
func errNamespaceInvalid(ns string, err error) error {
	return errcode.ErrorCodeNameInvalid.WithMessage(fmt.Sprintf("query parameter ns: %v", err)).
		WithDetail(map[string]string{"ns": ns})
}

// prefixed reports the registry a repository name starts with, by the
// first component of its repositories' stored names (ident.Prefix), and
// the name without it. Clients that send no ns (podman 4, CRI-O, skopeo,
// any client of the cache's own address) reach another registry so:
// docker.io/library/alpine is library/alpine at docker.io, and is stored
// under the very name the client asked. A name of the default registry
// that starts so is never the default registry's: its storage would be
// that registry's.
func (c *API) prefixed(named reference.Named) (string, reference.Named, bool) {
	if len(c.cfg.Registries) == 0 {
		return "", nil, false
	}
	first, rest, ok := strings.Cut(named.Name(), "/")
	if !ok {
		return "", nil, false
	}
	for reg := range c.cfg.Registries {
		if ident.Prefix(reg) == first {
			restNamed, err := reference.WithName(rest)
			if err != nil {
				return "", nil, false
			}
			return reg, restNamed, true
		}
	}
	return "", nil, false
}

func errReservedName(name, registry string) error {
	return errcode.ErrorCodeNameUnknown.WithMessage(fmt.Sprintf(
		"repository %q of the default registry: names starting with %s/ hold registry %s's content in this cache; pull %s with ns=%s",
		name, ident.Prefix(registry), registry, name[strings.Index(name, "/")+1:], registry)).
		WithDetail(map[string]string{"repository": name, "registry": registry})
}
