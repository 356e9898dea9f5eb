package httpapi

import (
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"github.com/gorilla/mux"
)

// blobRoute recognizes the commonest request, a blob by sha256 digest,
// without the router, whose regular expressions for every route cost a
// tenth of a small hit's CPU (`bench -only warm-load -cpuprofile`). It
// accepts only what distribution's router matches as the blob route, with
// the same variables; anything else goes to the router.
type blobRoute struct {
	route *mux.Route
	name  *regexp.Regexp // reference.NameRegexp, anchored
}

func newBlobRoute(router *mux.Router, routeName string) blobRoute {
	return blobRoute{route: router.Get(routeName), name: regexp.MustCompile(`^(?:` + reference.NameRegexp.String() + `)$`)}
}

// match fills m for a path /v2/NAME/blobs/sha256:HEX (64 lowercase hex
// digits); false for anything else.
func (b blobRoute) match(path string, m *mux.RouteMatch) bool {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok || b.route == nil {
		return false
	}
	i := strings.LastIndex(rest, "/blobs/")
	if i <= 0 {
		return false
	}
	name, dgst := rest[:i], rest[i+len("/blobs/"):]
	hex, ok := strings.CutPrefix(dgst, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" || !b.name.MatchString(name) {
		return false
	}
	m.Route, m.Handler, m.MatchErr = b.route, nil, nil
	m.Vars = map[string]string{"name": name, "digest": dgst}
	return true
}
