package httpapi

import (
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/gorilla/mux"
)

// blobRoute accepts only what the router matches as the blob route, with
// the same variables.
func checkBlobRoute(t *testing.T, path string) {
	router := newRouter()
	b := newBlobRoute(router, v2.RouteNameBlob)
	var fast mux.RouteMatch
	if !b.match(path, &fast) {
		return // the router decides: nothing to compare
	}
	var slow mux.RouteMatch
	req := httptest.NewRequest("GET", "http://x/", nil)
	req.URL.Path = path
	if !router.Match(req, &slow) || slow.Route == nil || slow.Route.GetName() != v2.RouteNameBlob || slow.Handler != nil {
		t.Fatalf("%q: blobRoute matched, the router did not (%v)", path, slow.Route)
	}
	if !reflect.DeepEqual(fast.Vars, slow.Vars) {
		t.Fatalf("%q: vars %v, router's %v", path, fast.Vars, slow.Vars)
	}
}

func TestBlobRouteAsRouter(t *testing.T) {
	hex := strings.Repeat("ab12", 16)
	matched := 0
	b := newBlobRoute(newRouter(), v2.RouteNameBlob)
	for _, p := range []string{
		"/v2/a/blobs/sha256:" + hex,
		"/v2/library/ubuntu/blobs/sha256:" + hex,
		"/v2/a/blobs/b/blobs/sha256:" + hex,
		"/v2/a.b-c__d/e/blobs/sha256:" + hex,
		"/v2/A/blobs/sha256:" + hex,
		"/v2/a//blobs/sha256:" + hex,
		"/v2/a/blobs/sha256:" + strings.ToUpper(hex),
		"/v2/a/blobs/sha256:" + hex + "/",
		"/v2/a/blobs/sha512:" + hex + hex,
		"/v2/a/blobs/uploads/",
		"/v2//blobs/sha256:" + hex,
		"/v2/a/manifests/sha256:" + hex,
	} {
		checkBlobRoute(t, p)
		var m mux.RouteMatch
		if b.match(p, &m) {
			matched++
		}
	}
	if matched != 4 {
		t.Fatalf("blobRoute matched %d of the paths, want the 4 plain blob paths", matched)
	}
}

func FuzzBlobRouteAsRouter(f *testing.F) {
	hex := strings.Repeat("0f", 32)
	for _, p := range []string{"/v2/a/blobs/sha256:" + hex, "/v2/a/b/blobs/sha256:" + hex, "/v2/a/blobs/blobs/sha256:" + hex} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) { checkBlobRoute(t, p) })
}
