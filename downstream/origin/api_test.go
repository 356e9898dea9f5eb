package origin

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"

	"github.com/content-cache/content-cache/internal/regtest"
)

// TestAPI walks the content cache API: who may do what, and the error for
// each kind of bad input.
func TestAPI(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", map[string]any{
		"caches": []any{map[any]any{"name": "static-lan", "host": "http://lan.example:5000"}},
	}, clock)
	const (
		admin = "admin"
		alice = "alice"
		bob   = "bob"
	)
	pw := func(u string) string { return testUsers[u] }
	create := `{"name": "region-asia", "host": "` + cache.URL + `"}`
	cases := []struct {
		name       string
		user       string
		method     string
		path       string
		body       string
		wantStatus int
		wantBody   string // in the body (message or JSON)
	}{
		{"create, anonymous", "", "POST", cachesPath, create, 401, "authentication required"},
		{"create, not admin", bob, "POST", cachesPath, create, 403, `user \"bob\" is not an admin`},
		{"create", admin, "POST", cachesPath, create, 201, `"name":"region-asia"`},
		{"create twice", admin, "POST", cachesPath, create, 409, `content cache \"region-asia\" already exists`},
		{"create over a configured one", admin, "POST", cachesPath, `{"name":"static-lan","host":"http://x"}`, 409, "defined in the configuration"},
		{"create, bad name", admin, "POST", cachesPath, `{"name":"Region Asia","host":"http://x"}`, 400, `name \"Region Asia\" is not valid`},
		{"create, reserved name", admin, "POST", cachesPath, `{"name":"keys","host":"http://x"}`, 400, `name \"keys\" is not valid`},
		{"create, no name", admin, "POST", cachesPath, `{"host":"http://x"}`, 400, `name \"\" is not valid`},
		{"create, bad host", admin, "POST", cachesPath, `{"name":"a","host":"ftp://x"}`, 400, `host \"ftp://x\" is not valid`},
		{"create, host with a path", admin, "POST", cachesPath, `{"name":"a","host":"https://x/v2"}`, 400, `host \"https://x/v2\" is not valid`},
		{"create, host with a password", admin, "POST", cachesPath, `{"name":"a","host":"https://u:secret@x"}`, 400, `https://u:xxxxx@x`},
		{"create, bad port", admin, "POST", cachesPath, `{"name":"a","host":"https://x:99999"}`, 400, "expected a port from 1 to 65535"},
		{"create, unknown field", admin, "POST", cachesPath, `{"name":"a","host":"http://x","ttl":5}`, 400, `unknown field \"ttl\"`},
		{"create, empty body", admin, "POST", cachesPath, ``, 400, "the body is empty"},
		{"create, not JSON", admin, "POST", cachesPath, `name=a`, 400, "not a JSON object"},
		{"create, two objects", admin, "POST", cachesPath, create + create, 400, "data after the JSON object"},
		{"list, anonymous", "", "GET", cachesPath, "", 401, "authentication required"},
		{"list", bob, "GET", cachesPath, "", 200, `"name":"region-asia"`},
		{"get one", bob, "GET", cachesPath + "/static-lan", "", 200, `"source":"config"`},
		{"get unknown", bob, "GET", cachesPath + "/nope", "", 404, `no content cache named \"nope\"`},
		{"put", admin, "PUT", cachesPath, create, 405, "method PUT is not allowed"},
		{"unknown path", admin, "GET", "/api/v0/repositories", "", 404, "no such API path"},
		{"settings, nothing yet", alice, "GET", accountsPrefix + "alice/settings", "", 200, `{"contentCache":""}`},
		{"settings of another user", bob, "GET", accountsPrefix + "alice/settings", "", 403, `user \"bob\" may not see or change the settings of \"alice\"`},
		{"set another user's", bob, "PATCH", accountsPrefix + "alice/settings", `{"contentCache":"region-asia"}`, 403, "may not see or change"},
		{"set, unknown cache", alice, "PATCH", accountsPrefix + "alice/settings", `{"contentCache":"nope"}`, 400, `no content cache named \"nope\"`},
		{"set, no field", alice, "PATCH", accountsPrefix + "alice/settings", `{}`, 400, `the body has no \"contentCache\"`},
		{"set, wrong type", alice, "PATCH", accountsPrefix + "alice/settings", `{"contentCache":5}`, 400, "not a JSON object of the expected fields"},
		{"set own", alice, "PATCH", accountsPrefix + "alice/settings", `{"contentCache":"region-asia"}`, 200, `{"contentCache":"region-asia"}`},
		{"get own", alice, "GET", accountsPrefix + "alice/settings", "", 200, `{"contentCache":"region-asia"}`},
		{"admin sets bob's", admin, "PATCH", accountsPrefix + "bob/settings", `{"contentCache":"static-lan"}`, 200, `{"contentCache":"static-lan"}`},
		{"admin reads alice's", admin, "GET", accountsPrefix + "alice/settings", "", 200, `{"contentCache":"region-asia"}`},
		{"bob clears his", bob, "PATCH", accountsPrefix + "bob/settings", `{"contentCache":""}`, 200, `{"contentCache":""}`},
		{"settings, POST", alice, "POST", accountsPrefix + "alice/settings", `{}`, 405, "expected GET or PATCH"},
		{"delete, not admin", bob, "DELETE", cachesPath + "/region-asia", "", 403, "not an admin"},
		{"delete a configured one", admin, "DELETE", cachesPath + "/static-lan", "", 409, "remove it there"},
		{"delete", admin, "DELETE", cachesPath + "/region-asia", "", 204, ""},
		{"delete again", admin, "DELETE", cachesPath + "/region-asia", "", 404, `no content cache named \"region-asia\"`},
		{"keys, anonymous", "", "GET", keysPath, "", 200, `"kty":"OKP"`},
		{"keys, POST", admin, "POST", keysPath, "", 405, "expected GET or HEAD"},
	}
	for _, tc := range cases {
		r := api(t, og.URL, tc.user, pw(tc.user), tc.method, tc.path, tc.body)
		if r.Status != tc.wantStatus || !strings.Contains(r.Body, tc.wantBody) {
			t.Errorf("%s: %s %s: %d %q; want %d with %q", tc.name, tc.method, tc.path, r.Status, r.Body, tc.wantStatus, tc.wantBody)
		}
		if r.Status >= 400 {
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: error Content-Type %q", tc.name, ct)
			}
			errorMessage(t, r) // the body is distribution's error shape
		}
		if r.Status == 401 && r.Header.Get("WWW-Authenticate") != `Basic realm="origin"` {
			t.Errorf("%s: WWW-Authenticate %q, want the origin's Basic challenge", tc.name, r.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestDeletedCacheServedDirectly: a user left assigned to a deleted cache
// is served by the origin.
func TestDeletedCacheServedDirectly(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	img := regtest.RandomImage(8, 1, 1024)
	if err := regtest.Push(t.Context(), og.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	api(t, og.URL, "admin", "adminpw", "POST", cachesPath, `{"name":"gone","host":"`+cache.URL+`"}`)
	api(t, og.URL, "alice", "alicepw", "PATCH", accountsPrefix+"alice/settings", `{"contentCache":"gone"}`)
	og.Origin.Probe(t.Context())
	blobPath := "/v2/" + img.Repo + "/blobs/" + digestOf(img.Layers[0])
	if r := do(t, pullClient(og.URL, "alice", "alicepw"), "GET", blobPath); r.Status != http.StatusTemporaryRedirect {
		t.Fatalf("before the delete: %d", r.Status)
	}
	if r := api(t, og.URL, "admin", "adminpw", "DELETE", cachesPath+"/gone", ""); r.Status != http.StatusNoContent {
		t.Fatalf("delete: %d %q", r.Status, r.Body)
	}
	if r := do(t, pullClient(og.URL, "alice", "alicepw"), "GET", blobPath); r.Status != http.StatusOK || r.Body != string(img.Layers[0]) {
		t.Fatalf("after the delete: %d", r.Status)
	}
}

// TestPersistence: caches and settings made through the API survive a
// restart over the same storage, and a second replica over that storage
// sees them (after its next probe round for the cache list).
func TestPersistence(t *testing.T) {
	clock := &regtest.Clock{}
	cache := fakeCache(t)
	auth := regtest.HtpasswdAuth(t, testUsers)
	first := startOrigin(t, auth, "", nil, clock)
	// Another replica over the same storage, running at the same time,
	// started before the changes.
	replica := startOrigin(t, auth, first.Root, nil, clock)
	replica.Origin.Probe(t.Context())
	img := regtest.RandomImage(9, 1, 1024)
	if err := regtest.Push(t.Context(), first.URL, "admin", "adminpw", img); err != nil {
		t.Fatal(err)
	}
	if r := api(t, first.URL, "admin", "adminpw", "POST", cachesPath, `{"name":"region-asia","host":"`+cache.URL+`"}`); r.Status != 201 {
		t.Fatalf("create: %d %q", r.Status, r.Body)
	}
	if r := api(t, first.URL, "alice", "alicepw", "PATCH", accountsPrefix+"alice/settings", `{"contentCache":"region-asia"}`); r.Status != 200 {
		t.Fatalf("set: %d %q", r.Status, r.Body)
	}
	first.stop()

	// Where it is kept: one file per item, under the origin's tree.
	d := filesystem.New(filesystem.DriverParameters{RootDirectory: first.Root, MaxThreads: 25})
	if _, err := d.Stat(t.Context(), "/content-cache/v1/origin/caches/region-asia.json"); err != nil {
		t.Fatalf("stored cache: %v", err)
	}

	second := startOrigin(t, auth, first.Root, nil, clock)
	for name, og := range map[string]*testOrigin{"restarted": second, "replica": replica} {
		og.Origin.Probe(t.Context())
		var list []cacheStatus
		r := api(t, og.URL, "bob", "bobpw", "GET", cachesPath, "")
		if err := json.Unmarshal([]byte(r.Body), &list); err != nil || len(list) != 1 || list[0].Name != "region-asia" || list[0].Source != "api" || !list[0].Healthy {
			t.Fatalf("%s: list %d %q", name, r.Status, r.Body)
		}
		if r := api(t, og.URL, "alice", "alicepw", "GET", accountsPrefix+"alice/settings", ""); !strings.Contains(r.Body, `"region-asia"`) {
			t.Fatalf("%s: alice's setting %q", name, r.Body)
		}
		dgst := digestOf(img.Layers[0])
		verifyRedirect(t, og, do(t, pullClient(og.URL, "alice", "alicepw"), "GET", "/v2/"+img.Repo+"/blobs/"+dgst), cache.URL, "region-asia", img.Repo, dgst, clock.Now())
	}
}
