package signature

import (
	"net/http"
	"net/url"
	"strings"
)

// RedactQuery returns rawQuery without what could carry a signature, for
// anything that logs or forwards a request's URI: every pair whose name
// mentions "cc-" in any letter case or percent-encoding (cc%2Dsig,
// %63c-sig, CC-SIG, cc%252Dsig), and every pair that does not parse (a ';'
// inside, a broken escape), which url.ParseQuery drops while the raw query
// still carries it. The other pairs are kept as they came, in order. The
// bool reports a change.
func RedactQuery(rawQuery string) (string, bool) {
	if rawQuery == "" {
		return rawQuery, false
	}
	if !mentions(rawQuery) {
		if _, err := url.ParseQuery(rawQuery); err == nil {
			return rawQuery, false // the common case: nothing to do
		}
	}
	pairs := strings.Split(rawQuery, "&")
	kept := pairs[:0:0]
	for _, p := range pairs {
		if p == "" {
			continue
		}
		name, value, _ := strings.Cut(p, "=")
		if strings.Contains(p, ";") || mentions(name) {
			continue
		}
		if _, err := url.QueryUnescape(name); err != nil {
			continue
		}
		if _, err := url.QueryUnescape(value); err != nil {
			continue
		}
		kept = append(kept, p)
	}
	out := strings.Join(kept, "&")
	return out, out != rawQuery
}

// mentions reports whether s holds "cc-" once decoded, however many times
// it was percent-encoded (a few levels; deeper nesting counts as a
// mention), in any letter case. Broken escapes are kept as they are and
// the valid ones around them decoded, so "cc%2Dsig=%zz" counts too.
func mentions(s string) bool {
	for range 4 {
		if strings.Contains(strings.ToLower(s), "cc-") {
			return true
		}
		u := lenientUnescape(s)
		if u == s {
			return false
		}
		s = u
	}
	return true
}

// lenientUnescape decodes the valid %XX escapes of s and keeps the rest.
func lenientUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func ishex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// RedactRequest returns r with its query redacted (RedactQuery), or r
// itself when there is nothing to take off. r is never changed: the copy
// has its own URL and RequestURI, which distribution's access log writes.
func RedactRequest(r *http.Request) *http.Request {
	q, changed := RedactQuery(r.URL.RawQuery)
	if !changed {
		return r
	}
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q
	r2.URL.ForceQuery = false
	r2.RequestURI = r2.URL.RequestURI()
	return r2
}
