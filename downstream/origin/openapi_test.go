package origin

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/content-cache/content-cache/internal/regtest"
)

// apiValidator checks every /api/v0/ response a test origin gives against
// the embedded OpenAPI document (kin-openapi's openapi3filter), so that
// the document and the API cannot drift apart: each test that starts an
// origin (startOriginWith) fails on an undocumented status, header or body.
type apiValidator struct {
	doc    *openapi3.T
	router routers.Router

	mu      sync.Mutex
	checked int
	errs    []string
}

func loadOpenAPI(t testing.TB, data []byte) *openapi3.T {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		t.Fatalf("loading the OpenAPI document: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("the OpenAPI document is not valid: %v", err)
	}
	return doc
}

func newAPIValidator(t testing.TB) *apiValidator {
	t.Helper()
	doc := loadOpenAPI(t, openAPI)
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &apiValidator{doc: doc, router: router}
}

// teeWriter keeps a copy of the response it passes on.
type teeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *teeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *teeWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(p)
	return w.ResponseWriter.Write(p)
}

func (v *apiValidator) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, apiPrefix) {
			h.ServeHTTP(w, r)
			return
		}
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, r)
		if err := v.check(r, tw.status, tw.Header(), tw.body.Bytes()); err != nil {
			v.mu.Lock()
			v.errs = append(v.errs, fmt.Sprintf("%s %s → %d: %v", r.Method, r.URL.Path, tw.status, err))
			v.mu.Unlock()
		}
	})
}

// check validates one response. A path the document does not have (an
// unknown API path) must get the documented 404 error body.
func (v *apiValidator) check(r *http.Request, status int, hdr http.Header, body []byte) error {
	v.mu.Lock()
	v.checked++
	v.mu.Unlock()
	req := r.Clone(r.Context())
	req.Body = http.NoBody
	opts := &openapi3filter.Options{IncludeResponseStatus: true, AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}
	if r.Method == http.MethodHead {
		req.Method = http.MethodGet // HEAD is GET without the body
		opts.ExcludeResponseBody = true
	}
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		if status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
			return fmt.Errorf("no operation in the document: %v", err)
		}
		// Unknown API paths and methods answer with the documented error body.
		route, params, err = v.router.FindRoute(httptest.NewRequest(http.MethodGet, cachesPath+"/x", nil))
		if err != nil {
			return err
		}
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 status,
		Header:                 hdr,
		Options:                opts,
	}
	in.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(r.Context(), in)
}

// report fails t with every response that did not match the document.
func (v *apiValidator) report(t testing.TB) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, e := range v.errs {
		t.Errorf("response not as the OpenAPI document says: %s", e)
	}
}

// TestOpenAPIDocument: the document is served, is OpenAPI 3.1 and valid,
// names every operation of the API, and the validator the tests run
// rejects a response that differs from it (so it can fail).
func TestOpenAPIDocument(t *testing.T) {
	clock := &regtest.Clock{}
	og := startOrigin(t, regtest.HtpasswdAuth(t, testUsers), "", nil, clock)
	r := api(t, og.URL, "", "", http.MethodGet, openAPIPath, "")
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("GET %s: %d %s", openAPIPath, r.Status, r.Header.Get("Content-Type"))
	}
	doc := loadOpenAPI(t, []byte(r.Body))
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") {
		t.Errorf("openapi %q, want 3.1", doc.OpenAPI)
	}
	want := map[string][]string{
		openAPIPath:                        {"GET"},
		keysPath:                           {"GET"},
		cachesPath:                         {"GET", "POST"},
		cachesPath + "/{name}":             {"DELETE", "GET"},
		accountsPrefix + "{user}/settings": {"GET", "PATCH"},
	}
	for p, methods := range want {
		item := doc.Paths.Find(p)
		if item == nil {
			t.Errorf("the document has no path %s", p)
			continue
		}
		for _, m := range methods {
			op := item.GetOperation(m)
			if op == nil {
				t.Errorf("the document has no %s %s", m, p)
				continue
			}
			if op.Responses.Status(405) == nil {
				t.Errorf("%s %s documents no 405", m, p)
			}
		}
	}
	if n := len(doc.Paths.Map()); n != len(want) {
		t.Errorf("the document has %d paths, want %d", n, len(want))
	}
	if doc.Components.SecuritySchemes["basic"] == nil || doc.Components.SecuritySchemes["bearer"] == nil {
		t.Error("the document does not describe Basic and bearer authentication")
	}

	// The validator fails on what the document does not allow.
	v := newAPIValidator(t)
	get := httptest.NewRequest(http.MethodGet, cachesPath, nil)
	json := http.Header{"Content-Type": {"application/json"}}
	for name, tc := range map[string]struct {
		status int
		body   string
	}{
		"a field the document lacks": {200, `[{"name":"a","host":"http://a","source":"api","healthy":true,"redirects":0,"extra":1}]`},
		"a wrong source":             {200, `[{"name":"a","host":"http://a","source":"file","healthy":true,"redirects":0}]`},
		"an undocumented status":     {418, `{"errors":[{"code":"UNKNOWN","message":"x"}]}`},
		"an error of another shape":  {403, `{"error":"denied"}`},
	} {
		if err := v.check(get, tc.status, json, []byte(tc.body)); err == nil {
			t.Errorf("%s: the validator accepted it", name)
		}
	}
	if err := v.check(get, 200, json, []byte(`[{"name":"a","host":"http://a","source":"api","healthy":true,"redirects":3,"lastProbe":"2026-12-07T00:00:00Z"}]`)); err != nil {
		t.Errorf("a documented answer: %v", err)
	}
	// And it ran on this test's own requests.
	if og.validator.checked == 0 {
		t.Error("the test origin's validator checked nothing")
	}
}
