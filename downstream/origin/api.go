package origin

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/distribution/distribution/v3/registry/auth"

	"github.com/content-cache/content-cache/downstream/internal/signature"
)

// The API, after DTR's (see README "Transparent caches", "The origin side"):
//
//	GET    /api/v0/content_caches/keys           public keys (JWKS), no auth
//	GET    /api/v0/content_caches                 any user: list
//	POST   /api/v0/content_caches                 admin: {"name", "host"}
//	GET    /api/v0/content_caches/{name}          any user
//	DELETE /api/v0/content_caches/{name}          admin
//	GET    /api/v0/accounts/{user}/settings       the user or an admin
//	PATCH  /api/v0/accounts/{user}/settings       the user or an admin: {"contentCache": NAME or ""}
//	GET    /api/v0/openapi.yaml                   this API's OpenAPI 3.1 document, no auth
const (
	openAPIPath    = "/api/v0/openapi.yaml"
	apiPrefix      = "/api/v0/"
	cachesPath     = "/api/v0/content_caches"
	keysPath       = "/api/v0/content_caches/keys"
	accountsPrefix = "/api/v0/accounts/"
	maxBody        = 64 << 10
)

// Handler serves the API in front of next (the app), with ac (nil: none)
// identifying callers.
func (o *Origin) Handler(ac auth.AccessController, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/ui" || strings.HasPrefix(p, uiPath):
			o.serveUI(w, r)
		case !strings.HasPrefix(p, apiPrefix):
			if o.serveSigned(w, r) { // a cache fetching with a signature (signed.go)
				return
			}
			// The app logs every request's URI: a signature, or what
			// might be one, never reaches it (signature.RedactRequest).
			next.ServeHTTP(w, signature.RedactRequest(r))
		case p == keysPath:
			o.serveKeys(w, r)
		case p == openAPIPath:
			serveOpenAPI(w, r)
		case p == cachesPath || strings.HasPrefix(p, cachesPath+"/"):
			o.serveCaches(ac, w, r, strings.TrimPrefix(strings.TrimPrefix(p, cachesPath), "/"))
		case strings.HasPrefix(p, accountsPrefix) && strings.HasSuffix(p, "/settings"):
			user := strings.TrimSuffix(strings.TrimPrefix(p, accountsPrefix), "/settings")
			if user == "" || strings.Contains(user, "/") {
				writeError(w, http.StatusNotFound, "NOT_FOUND", "no such API path: "+p)
				return
			}
			o.serveSettings(ac, w, r, user)
		default:
			writeError(w, http.StatusNotFound, "NOT_FOUND", "no such API path: "+p)
		}
	})
}

// openAPI is the API's OpenAPI 3.1 document; a test checks every response
// the test suite gets against it (openapi_test.go).
//
//go:embed openapi.yaml
var openAPI []byte

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Cache-Control", "max-age=300")
	_, _ = w.Write(openAPI)
}

func (o *Origin) serveKeys(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	doc, err := signature.MarshalJWKS(o.cfg.PublishedKeys)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "max-age=60")
	_, _ = w.Write(doc)
}

func (o *Origin) serveCaches(ac auth.AccessController, w http.ResponseWriter, r *http.Request, name string) {
	if name == "" {
		if !allow(w, r, http.MethodGet, http.MethodPost) {
			return
		}
	} else if strings.Contains(name, "/") {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such API path: "+r.URL.Path)
		return
	} else if !allow(w, r, http.MethodGet, http.MethodDelete) {
		return
	}
	id, ok := o.authenticate(ac, w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	switch {
	case r.Method == http.MethodGet && name == "":
		writeJSON(w, http.StatusOK, o.caches())
	case r.Method == http.MethodGet:
		for _, c := range o.caches() {
			if c.Name == name {
				writeJSON(w, http.StatusOK, c)
				return
			}
		}
		writeError(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no content cache named %q", name))
	case !id.admin:
		writeError(w, http.StatusForbidden, "DENIED", fmt.Sprintf("user %q is not an admin of the content caches", id.user))
	case r.Method == http.MethodPost:
		var body struct {
			Name string `json:"name"`
			Host string `json:"host"`
		}
		if !readJSON(w, r, &body) {
			return
		}
		c, aerr := o.createCache(ctx, body.Name, body.Host)
		if aerr != nil {
			aerr.write(w)
			return
		}
		writeJSON(w, http.StatusCreated, cacheStatus{Cache: c, Source: "api"})
	case r.Method == http.MethodDelete:
		if aerr := o.removeCache(ctx, name); aerr != nil {
			aerr.write(w)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// settings is the body of the account settings API. ContentCache is the
// user's cache: their own setting, else the configuration's users option;
// "" for none.
type settings struct {
	ContentCache *string `json:"contentCache"`
}

func (o *Origin) serveSettings(ac auth.AccessController, w http.ResponseWriter, r *http.Request, user string) {
	if !allow(w, r, http.MethodGet, http.MethodPatch) {
		return
	}
	id, ok := o.authenticate(ac, w, r)
	if !ok {
		return
	}
	if id.user != user && !id.admin {
		writeError(w, http.StatusForbidden, "DENIED", fmt.Sprintf("user %q may not see or change the settings of %q", id.user, user))
		return
	}
	ctx := r.Context()
	if r.Method == http.MethodPatch {
		var body settings
		if !readJSON(w, r, &body) {
			return
		}
		if body.ContentCache == nil {
			writeError(w, http.StatusBadRequest, "INVALID_INPUT", `the body has no "contentCache"; expected {"contentCache": "NAME"} or {"contentCache": ""} to remove the setting`)
			return
		}
		if aerr := o.setUserCache(ctx, user, *body.ContentCache); aerr != nil {
			aerr.write(w)
			return
		}
	}
	name, err := o.userCache(ctx, user)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, settings{ContentCache: &name})
}

// allow answers 405 unless r's method is one of methods.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", fmt.Sprintf("method %s is not allowed here; expected %s", r.Method, strings.Join(methods, " or ")))
	return false
}

// readJSON decodes one JSON object whose names are exactly v's JSON field
// names, or answers 400 saying what is wrong. encoding/json alone matches
// names without regard to case ({"ContentCache": …} would fill
// contentCache), so the object is first decoded into a map and its names
// checked as they were written; then the same bytes fill v, with
// DisallowUnknownFields as a second guard.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	fail := func(msg string) bool {
		writeError(w, http.StatusBadRequest, "INVALID_INPUT", msg)
		return false
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		if errors.Is(err, io.EOF) {
			return fail("the body is empty; expected a JSON object")
		}
		return fail("the body is not a JSON object of the expected fields: " + err.Error())
	}
	if dec.More() {
		return fail("the body has data after the JSON object")
	}
	var names map[string]json.RawMessage
	if err := json.Unmarshal(raw, &names); err != nil {
		return fail("the body is not a JSON object of the expected fields: " + err.Error())
	}
	fields := jsonFields(v)
	for name := range names {
		if !slices.Contains(fields, name) {
			return fail(fmt.Sprintf("the body is not a JSON object of the expected fields: unknown field %q; expected %s (names are case-sensitive)", name, quoteAll(fields)))
		}
	}
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	if err := strict.Decode(v); err != nil {
		return fail("the body is not a JSON object of the expected fields: " + err.Error())
	}
	return true
}

// jsonFields are the JSON names of the fields of the struct v points to.
func jsonFields(v any) []string {
	t := reflect.TypeOf(v).Elem()
	out := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			out = append(out, name)
		}
	}
	return out
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// apiError is distribution's error body shape, which clients already read.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Errors []apiError `json:"errors"`
	}{[]apiError{{Code: code, Message: msg}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
