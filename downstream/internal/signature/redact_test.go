package signature

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestRedactQuery(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"n=10&last=a", "n=10&last=a"},
		{"ns=acc-registry.example", "ns=acc-registry.example"}, // a value is not a parameter name
		{"cc-sig=SECRET&n=1", "n=1"},
		{"CC-SIG=SECRET&n=1", "n=1"},
		{"cc%2Dsig=SECRET&n=1", "n=1"},
		{"cc%2dsig=SECRET", ""},
		{"%63%63-sig=SECRET&n=1", "n=1"},
		{"cc%252Dsig=SECRET&n=1", "n=1"},
		{"n=1;cc-sig=SECRET", ""},
		{"n=1&x=1;y=SECRET", "n=1"},
		{"cc%2Dsig=%zzSECRET&n=1", "n=1"},
		{"n=%zz&last=b", "last=b"},
		{"n=1&&last=b", "n=1&&last=b"}, // parses: kept as it came
	} {
		got, changed := RedactQuery(tc.in)
		if got != tc.want || changed != (tc.in != tc.want) {
			t.Errorf("RedactQuery(%q) = %q, %v; want %q", tc.in, got, changed, tc.want)
		}
		if strings.Contains(got, "SECRET") {
			t.Errorf("RedactQuery(%q) kept the secret: %q", tc.in, got)
		}
	}
}

func TestRedactRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "/v2/r/tags/list?n=1;cc-sig=SECRET&last=a", nil)
	r2 := RedactRequest(r)
	if r2.RequestURI != "/v2/r/tags/list?last=a" || r2.URL.RawQuery != "last=a" {
		t.Errorf("redacted: %q %q", r2.RequestURI, r2.URL.RawQuery)
	}
	if !strings.Contains(r.RequestURI, "SECRET") {
		t.Error("the original request was changed")
	}
	if clean := httptest.NewRequest("GET", "/v2/?n=1", nil); RedactRequest(clean) != clean {
		t.Error("a clean request was copied")
	}
}

func FuzzRedactQuery(f *testing.F) {
	f.Add("n=1;cc-sig=x")
	f.Add("cc%2Dsig=x&n=2")
	f.Fuzz(func(t *testing.T, q string) {
		got, _ := RedactQuery(q)
		if _, err := url.ParseQuery(got); err != nil {
			t.Fatalf("RedactQuery(%q) = %q does not parse: %v", q, got, err)
		}
		for _, p := range strings.Split(got, "&") {
			if name, _, _ := strings.Cut(p, "="); mentions(name) {
				t.Fatalf("RedactQuery(%q) = %q kept a cc- name", q, got)
			}
		}
		if again, changed := RedactQuery(got); changed || again != got {
			t.Fatalf("RedactQuery is not idempotent on %q: %q", got, again)
		}
	})
}
