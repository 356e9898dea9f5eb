package downstream

import (
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/config"
	"github.com/content-cache/content-cache/internal/testkit"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// What the error messages say is expected; spelled out here rather than
// taken from config.go so that a changed message fails a test.
const (
	wantPositive = "a positive duration such as 24h (units ns, us, ms, s, m, h; a bare integer means nanoseconds)"
	wantZeroOK   = "a duration such as 30s, or 0 to turn it off (units ns, us, ms, s, m, h; a bare integer means nanoseconds)"
	wantUps      = "a list of upstream URLs (https://host:port) or a list with one {originhost: URL, upstreamhosts: [URL, ...]}"
	wantKeys     = "advertise, anonymous, authttl, backoff, blobttl, cas, clientheadertimeout, clientidletimeout, dialtimeout, filltimeout, headertimeout, idletimeout, lowwatermark, maxsize, offlinegrace, pin, prefetch, redis, registries, signing, upstreams, warm"
)

// writeCA writes a CA certificate as PEM into dir and returns its path.
func writeCA(t *testing.T, dir string) string {
	t.Helper()
	pemData, err := os.ReadFile(testkit.NewCA(t).File)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// origin is the smallest valid options map plus extra keys.
func origin(extra map[string]any) map[string]any {
	m := map[string]any{"upstreams": []any{"https://origin.example.com"}}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func hostStrings(c Config) []string {
	var out []string
	for _, u := range c.Upstreams.Hosts() {
		out = append(out, u.String())
	}
	return out
}

func TestParseOptionsDefaults(t *testing.T) {
	c, err := ParseOptions(origin(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		AuthTTL:       30 * time.Second,
		DialTimeout:   10 * time.Second,
		HeaderTimeout: 30 * time.Second,
		IdleTimeout:   60 * time.Second,
		FillTimeout:   time.Hour,
		Backoff:       30 * time.Second,

		ClientHeaderTimeout: 60 * time.Second,
		ClientIdleTimeout:   2 * time.Minute,
	}
	c.Upstreams = Upstreams{}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestParseOptionsDurations(t *testing.T) {
	type field func(Config) time.Duration
	blob := func(c Config) time.Duration { return c.BlobTTL }
	auth := func(c Config) time.Duration { return c.AuthTTL }
	cases := []struct {
		key   string
		value any
		get   field
		want  time.Duration
	}{
		{"blobttl", "24h", blob, 24 * time.Hour},
		{"blobttl", "90m", blob, 90 * time.Minute},
		{"blobttl", "1500ms", blob, 1500 * time.Millisecond},
		{"blobttl", "10us", blob, 10 * time.Microsecond},
		{"blobttl", "100ns", blob, 100},
		{"blobttl", "86400000000000", blob, 24 * time.Hour}, // bare integer: ns
		{"blobttl", " 24h ", blob, 24 * time.Hour},
		{"blobttl", "1h30m", blob, 90 * time.Minute},
		{"blobttl", 5000, blob, 5000}, // YAML int: ns
		{"blobttl", int64(86400000000000), blob, 24 * time.Hour},
		{"blobttl", uint64(7), blob, 7},
		{"BlobTTL", "1h", blob, time.Hour}, // keys are case-insensitive
		{"offlinegrace", "24h", func(c Config) time.Duration { return c.OfflineGrace }, 24 * time.Hour},
		{"offlinegrace", "0", func(c Config) time.Duration { return c.OfflineGrace }, 0},
		{"authttl", 0, auth, 0},
		{"authttl", "0", auth, 0},
		{"authttl", "0s", auth, 0},
		{"authttl", "10s", auth, 10 * time.Second},
		{"dialtimeout", "3s", func(c Config) time.Duration { return c.DialTimeout }, 3 * time.Second},
		{"headertimeout", "45s", func(c Config) time.Duration { return c.HeaderTimeout }, 45 * time.Second},
		{"idletimeout", "2m", func(c Config) time.Duration { return c.IdleTimeout }, 2 * time.Minute},
		{"filltimeout", "30m", func(c Config) time.Duration { return c.FillTimeout }, 30 * time.Minute},
		{"clientheadertimeout", "90s", func(c Config) time.Duration { return c.ClientHeaderTimeout }, 90 * time.Second},
		{"clientidletimeout", "5m", func(c Config) time.Duration { return c.ClientIdleTimeout }, 5 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s=%#v", tc.key, tc.value), func(t *testing.T) {
			c, err := ParseOptions(origin(map[string]any{tc.key: tc.value}))
			if err != nil {
				t.Fatalf("ParseOptions: %v", err)
			}
			if got := tc.get(c); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseOptionsUpstreams(t *testing.T) {
	cases := []struct {
		name      string
		upstreams any
		origin    string
		hosts     []string
	}{
		{"one URL", []any{"https://registry.example.com:443"},
			"https://registry.example.com:443", []string{"https://registry.example.com:443"}},
		{"three URLs keep their order", []any{"https://cache-a.example.com", "http://cache-b.example.com:5000", "https://origin.example.com"},
			"https://origin.example.com", []string{"https://cache-a.example.com", "http://cache-b.example.com:5000", "https://origin.example.com"}},
		{"host lowercased, trailing slash and blanks dropped", []any{" https://Registry.Example.COM:8443/ "},
			"https://registry.example.com:8443", []string{"https://registry.example.com:8443"}},
		{"IPv6 literal", []any{"http://[::1]:5000"}, "http://[::1]:5000", []string{"http://[::1]:5000"}},
		{"http and https of one host are two upstreams", []any{"http://h", "https://h"}, "https://h", []string{"http://h", "https://h"}},
		{"DTR form, map[any]any as YAML v2 delivers it, origin only",
			[]any{map[any]any{"originhost": "https://origin.example.com"}},
			"https://origin.example.com", []string{"https://origin.example.com"}},
		{"DTR form, map[any]any, with upstreamhosts",
			[]any{map[any]any{"originhost": "https://origin.example.com", "upstreamhosts": []any{"https://cache-a.example.com", "https://cache-b.example.com"}}},
			"https://origin.example.com", []string{"https://cache-a.example.com", "https://cache-b.example.com", "https://origin.example.com"}},
		{"DTR form, map[string]any, with upstreamhosts",
			[]any{map[string]any{"originhost": "https://origin.example.com", "upstreamhosts": []any{"https://cache-a.example.com"}}},
			"https://origin.example.com", []string{"https://cache-a.example.com", "https://origin.example.com"}},
		{"DTR form, keys are case-insensitive, empty upstreamhosts",
			[]any{map[string]any{"OriginHost": "https://origin.example.com", "UpstreamHosts": nil}},
			"https://origin.example.com", []string{"https://origin.example.com"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseOptions(map[string]any{"upstreams": tc.upstreams})
			if err != nil {
				t.Fatalf("ParseOptions: %v", err)
			}
			if got := c.Upstreams.Origin.String(); got != tc.origin {
				t.Errorf("origin %q, want %q", got, tc.origin)
			}
			if got := hostStrings(c); !reflect.DeepEqual(got, tc.hosts) {
				t.Errorf("Hosts() %q, want %q", got, tc.hosts)
			}
		})
	}
}

func TestParseOptionsCAs(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	// A bundle: a key block first, then the certificate.
	bundle := filepath.Join(dir, "bundle.pem")
	pemCA, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	other := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not a key")})
	if err := os.WriteFile(bundle, append(other, pemCA...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cas  any
		want []string
	}{
		{"one PEM file", []any{ca}, []string{ca}},
		{"two files", []any{ca, bundle}, []string{ca, bundle}},
		{"empty list", []any{}, nil},
		{"no value", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseOptions(origin(map[string]any{"cas": tc.cas}))
			if err != nil {
				t.Fatalf("ParseOptions: %v", err)
			}
			if !reflect.DeepEqual(c.CAs, tc.want) {
				t.Fatalf("CAs %q, want %q", c.CAs, tc.want)
			}
		})
	}
}

func TestParseOptionsInternalKeysIgnored(t *testing.T) {
	if _, err := ParseOptions(origin(map[string]any{instanceKey: struct{}{}})); err != nil {
		t.Fatal(err)
	}
}

func TestParseOptionsErrors(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	noCert := filepath.Join(dir, "key-only.pem")
	if err := os.WriteFile(noCert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte("just some text\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badCert := filepath.Join(dir, "bad-cert.pem")
	if err := os.WriteFile(badCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	ups := func(v any) map[string]any { return map[string]any{"upstreams": v} }
	urlErr := func(key, raw, what string) string {
		return "downstream: option \"" + key + "\": \"" + raw + "\" " + what
	}
	const notURL = "is not an upstream URL; expected http:// or https:// followed by host[:port]"
	const onlyHost = "; expected only scheme://host[:port]"
	dtr := func(m map[any]any) map[string]any { return ups([]any{m}) }

	cases := []struct {
		name string
		raw  map[string]any
		want string
	}{
		// unknown keys
		{"unknown option", origin(map[string]any{"bogus": 1}),
			`downstream: unknown option "bogus"; valid options are ` + wantKeys},
		{"unknown option reported first in key order", origin(map[string]any{"zzz": 1, "aaa": 2}),
			`downstream: unknown option "aaa"; valid options are ` + wantKeys},
		{"a DTR key at the top level", origin(map[string]any{"originhost": "https://o"}),
			`downstream: unknown option "originhost"; valid options are ` + wantKeys},

		// blobttl
		{"blobttl boolean", origin(map[string]any{"blobttl": true}),
			`downstream: option "blobttl": found boolean true, expected ` + wantPositive},
		{"blobttl list", origin(map[string]any{"blobttl": []any{"24h"}}),
			`downstream: option "blobttl": found list [24h], expected ` + wantPositive},
		{"blobttl mapping", origin(map[string]any{"blobttl": map[any]any{"h": 24}}),
			`downstream: option "blobttl": found mapping map[h:24], expected ` + wantPositive},
		{"blobttl number", origin(map[string]any{"blobttl": 1.5}),
			`downstream: option "blobttl": found number 1.5, expected ` + wantPositive},
		{"blobttl no value", origin(map[string]any{"blobttl": nil}),
			`downstream: option "blobttl": found nothing, expected ` + wantPositive},
		{"blobttl negative", origin(map[string]any{"blobttl": "-1s"}),
			`downstream: option "blobttl": found string "-1s", expected ` + wantPositive},
		{"blobttl negative integer string", origin(map[string]any{"blobttl": "-5"}),
			`downstream: option "blobttl": found string "-5", expected ` + wantPositive},
		{"blobttl negative integer", origin(map[string]any{"blobttl": -5}),
			`downstream: option "blobttl": found integer -5, expected ` + wantPositive},
		{"blobttl zero string", origin(map[string]any{"blobttl": "0"}),
			`downstream: option "blobttl": found string "0", expected ` + wantPositive},
		{"blobttl zero integer", origin(map[string]any{"blobttl": 0}),
			`downstream: option "blobttl": found integer 0, expected ` + wantPositive},
		{"blobttl unknown unit", origin(map[string]any{"blobttl": "24x"}),
			`downstream: option "blobttl": found string "24x", expected ` + wantPositive},
		{"blobttl empty", origin(map[string]any{"blobttl": ""}),
			`downstream: option "blobttl": found string "", expected ` + wantPositive},
		{"blobttl days", origin(map[string]any{"blobttl": "1d"}),
			`downstream: option "blobttl": found string "1d", expected ` + wantPositive},
		{"blobttl micro sign", origin(map[string]any{"blobttl": "10µs"}),
			`downstream: option "blobttl": found string "10µs", expected ` + wantPositive},
		{"blobttl upper-case unit", origin(map[string]any{"blobttl": "24H"}),
			`downstream: option "blobttl": found string "24H", expected ` + wantPositive},
		{"blobttl beyond int64", origin(map[string]any{"blobttl": uint64(1) << 63}),
			`downstream: option "blobttl": found integer 9223372036854775808, expected ` + wantPositive},

		// authttl and the timeouts
		{"offlinegrace negative", origin(map[string]any{"offlinegrace": "-1h"}),
			`downstream: option "offlinegrace": found string "-1h", expected ` + wantZeroOK},
		{"offlinegrace unit typo", origin(map[string]any{"offlinegrace": "1d"}),
			`downstream: option "offlinegrace": found string "1d", expected ` + wantZeroOK},
		{"authttl negative", origin(map[string]any{"authttl": "-1s"}),
			`downstream: option "authttl": found string "-1s", expected ` + wantZeroOK},
		{"authttl garbage", origin(map[string]any{"authttl": "soon"}),
			`downstream: option "authttl": found string "soon", expected ` + wantZeroOK},
		{"authttl boolean", origin(map[string]any{"authttl": false}),
			`downstream: option "authttl": found boolean false, expected ` + wantZeroOK},
		{"dialtimeout zero", origin(map[string]any{"dialtimeout": 0}),
			`downstream: option "dialtimeout": found integer 0, expected ` + wantPositive},
		{"headertimeout garbage", origin(map[string]any{"headertimeout": "x"}),
			`downstream: option "headertimeout": found string "x", expected ` + wantPositive},
		{"idletimeout boolean", origin(map[string]any{"idletimeout": true}),
			`downstream: option "idletimeout": found boolean true, expected ` + wantPositive},
		{"filltimeout negative", origin(map[string]any{"filltimeout": "-1h"}),
			`downstream: option "filltimeout": found string "-1h", expected ` + wantPositive},
		{"clientheadertimeout zero", origin(map[string]any{"clientheadertimeout": "0s"}),
			`downstream: option "clientheadertimeout": found string "0s", expected ` + wantPositive},
		{"clientheadertimeout garbage", origin(map[string]any{"clientheadertimeout": "1d"}),
			`downstream: option "clientheadertimeout": found string "1d", expected ` + wantPositive},
		{"clientidletimeout negative", origin(map[string]any{"clientidletimeout": "-5m"}),
			`downstream: option "clientidletimeout": found string "-5m", expected ` + wantPositive},
		{"clientidletimeout list", origin(map[string]any{"clientidletimeout": []any{"1m"}}),
			`downstream: option "clientidletimeout": found list [1m], expected ` + wantPositive},

		// upstreams: shape
		{"upstreams missing", map[string]any{"blobttl": "24h"},
			`downstream: option "upstreams" is missing; expected ` + wantUps},
		{"upstreams missing, no options at all", map[string]any{},
			`downstream: option "upstreams" is missing; expected ` + wantUps},
		{"upstreams no value", ups(nil),
			`downstream: option "upstreams": found nothing, expected ` + wantUps},
		{"upstreams integer", ups(5),
			`downstream: option "upstreams": found integer 5, expected ` + wantUps},
		{"upstreams a string, not a list", ups("https://o"),
			`downstream: option "upstreams": found string "https://o", expected ` + wantUps},
		{"upstreams a mapping, not a list", ups(map[any]any{"originhost": "https://o"}),
			`downstream: option "upstreams": found mapping map[originhost:https://o], expected ` + wantUps},
		{"upstreams empty list", ups([]any{}),
			`downstream: option "upstreams": the list is empty, expected ` + wantUps},
		{"upstreams item integer", ups([]any{"https://o", 5}),
			`downstream: option "upstreams": found an item integer 5, expected ` + wantUps},
		{"upstreams mixed forms", ups([]any{"https://a", map[any]any{"originhost": "https://o"}}),
			`downstream: option "upstreams": mixes URLs and {originhost, upstreamhosts} objects; expected one form only`},
		{"two DTR objects", ups([]any{map[any]any{"originhost": "https://o"}, map[string]any{"originhost": "https://p"}}),
			`downstream: option "upstreams": found 2 {originhost, upstreamhosts} objects, expected exactly one (a cache has one origin)`},
		{"DTR originhost missing", dtr(map[any]any{"upstreamhosts": []any{"https://a"}}),
			`downstream: option "upstreams.originhost" is missing; expected the origin registry's URL such as https://registry.example.com`},
		{"DTR originhost no value", dtr(map[any]any{"originhost": nil}),
			`downstream: option "upstreams.originhost" is missing; expected the origin registry's URL such as https://registry.example.com`},
		{"DTR empty object", dtr(map[any]any{}),
			`downstream: option "upstreams.originhost" is missing; expected the origin registry's URL such as https://registry.example.com`},
		{"DTR unknown key", dtr(map[any]any{"originhost": "https://o", "upstreamhost": []any{"https://a"}}),
			`downstream: option "upstreams": unknown key "upstreamhost" in the {originhost, upstreamhosts} object; valid keys are originhost, upstreamhosts`},
		{"DTR unknown key reported before a bad originhost", dtr(map[any]any{"originhost": "ftp://o", "cas": []any{"/x"}}),
			`downstream: option "upstreams": unknown key "cas" in the {originhost, upstreamhosts} object; valid keys are originhost, upstreamhosts`},
		{"DTR non-string key", dtr(map[any]any{1: "https://o"}),
			`downstream: option "upstreams": found a key integer 1 in the {originhost, upstreamhosts} object, expected originhost or upstreamhosts`},
		{"DTR originhost a list", dtr(map[any]any{"originhost": []any{"https://o"}}),
			`downstream: option "upstreams.originhost": found list [https://o], expected a URL such as https://registry.example.com`},
		{"DTR upstreamhosts a string", dtr(map[any]any{"originhost": "https://o", "upstreamhosts": "https://a"}),
			`downstream: option "upstreams.upstreamhosts": found string "https://a", expected a list of URLs`},
		{"DTR upstreamhosts item integer", dtr(map[any]any{"originhost": "https://o", "upstreamhosts": []any{5}}),
			`downstream: option "upstreams.upstreamhosts": found an item integer 5, expected a URL`},

		// upstreams: URLs
		{"ftp scheme", ups([]any{"ftp://x"}), urlErr("upstreams", "ftp://x", notURL)},
		{"no scheme", ups([]any{"registry.example.com"}), urlErr("upstreams", "registry.example.com", notURL)},
		{"host:port without scheme", ups([]any{"registry.example.com:5000"}), urlErr("upstreams", "registry.example.com:5000", notURL)},
		{"no host", ups([]any{"https://"}), urlErr("upstreams", "https://", notURL)},
		{"port only", ups([]any{"https://:5000"}), urlErr("upstreams", "https://:5000", notURL)},
		{"empty string", ups([]any{""}), urlErr("upstreams", "", notURL)},
		{"unparsable", ups([]any{"https://h:port"}), urlErr("upstreams", "https://h:port", notURL)},
		{"path", ups([]any{"https://h/path"}), urlErr("upstreams", "https://h/path", "has a path"+onlyHost)},
		{"path /v2/", ups([]any{"https://h/v2/"}), urlErr("upstreams", "https://h/v2/", "has a path"+onlyHost)},
		{"query", ups([]any{"https://h?x=1"}), urlErr("upstreams", "https://h?x=1", "has a query"+onlyHost)},
		{"empty query", ups([]any{"https://h? "}), urlErr("upstreams", "https://h? ", "has a query"+onlyHost)},
		{"fragment", ups([]any{"https://h#f"}), urlErr("upstreams", "https://h#f", "has a fragment"+onlyHost)},
		{"empty fragment", ups([]any{"https://h#"}), urlErr("upstreams", "https://h#", "has a fragment"+onlyHost)},
		{"user and password, password not shown", ups([]any{"https://u:p@h"}),
			urlErr("upstreams", "https://u:xxxxx@h", "has user information; expected only scheme://host[:port] (each client's own credentials are forwarded)")},
		{"user only", ups([]any{"https://u@h"}),
			urlErr("upstreams", "https://u@h", "has user information; expected only scheme://host[:port] (each client's own credentials are forwarded)")},
		{"port out of range", ups([]any{"https://h:99999"}), urlErr("upstreams", "https://h:99999", "has port 99999; expected a port from 1 to 65535")},
		{"port zero", ups([]any{"https://h:0"}), urlErr("upstreams", "https://h:0", "has port 0; expected a port from 1 to 65535")},
		{"bad URL after good ones", ups([]any{"https://a", "https://b", "https://c/x"}), urlErr("upstreams", "https://c/x", "has a path"+onlyHost)},
		{"DTR originhost ftp", dtr(map[any]any{"originhost": "ftp://x"}), urlErr("upstreams.originhost", "ftp://x", notURL)},
		{"DTR upstreamhosts path", dtr(map[any]any{"originhost": "https://o", "upstreamhosts": []any{"https://a/p"}}),
			urlErr("upstreams.upstreamhosts", "https://a/p", "has a path"+onlyHost)},

		// upstreams: duplicates
		{"duplicate URL", ups([]any{"https://a", "https://a"}),
			urlErr("upstreams", "https://a", "is listed twice; expected each upstream once")},
		{"duplicate URL written differently", ups([]any{"https://a", "https://A:443/"}),
			urlErr("upstreams", "https://A:443/", `is the same upstream as "https://a"; expected each upstream once`)},
		{"duplicate http default port", ups([]any{"http://a:80", "http://a"}),
			urlErr("upstreams", "http://a", `is the same upstream as "http://a:80"; expected each upstream once`)},
		{"origin also in upstreamhosts", dtr(map[any]any{"originhost": "https://o", "upstreamhosts": []any{"https://a", "https://o"}}),
			urlErr("upstreams.upstreamhosts", "https://o", "is already listed in upstreams.originhost; expected each upstream once")},
		{"duplicate in upstreamhosts", dtr(map[any]any{"originhost": "https://o", "upstreamhosts": []any{"https://a", "https://a"}}),
			urlErr("upstreams.upstreamhosts", "https://a", "is listed twice; expected each upstream once")},

		// cas
		{"cas a string", origin(map[string]any{"cas": ca}),
			`downstream: option "cas": found string "` + ca + `", expected a list of absolute paths to PEM CA certificates`},
		{"cas a mapping", origin(map[string]any{"cas": map[any]any{"a": "b"}}),
			`downstream: option "cas": found mapping map[a:b], expected a list of absolute paths to PEM CA certificates`},
		{"cas item integer", origin(map[string]any{"cas": []any{ca, 5}}),
			`downstream: option "cas": found an item integer 5, expected an absolute path to a PEM CA certificate`},
		{"cas relative path", origin(map[string]any{"cas": []any{"certs/ca.pem"}}),
			`downstream: option "cas": "certs/ca.pem" is not an absolute path; expected an absolute path to a PEM CA certificate`},
		{"cas missing file", origin(map[string]any{"cas": []any{missing}}),
			`downstream: option "cas": cannot read "` + missing + `": no such file or directory; expected a readable PEM CA certificate`},
		{"cas a directory", origin(map[string]any{"cas": []any{dir}}),
			`downstream: option "cas": cannot read "` + dir + `": is a directory; expected a readable PEM CA certificate`},
		{"cas file with a key only", origin(map[string]any{"cas": []any{noCert}}),
			`downstream: option "cas": "` + noCert + `" holds no PEM certificate; expected at least one -----BEGIN CERTIFICATE----- block`},
		{"cas file without PEM", origin(map[string]any{"cas": []any{text}}),
			`downstream: option "cas": "` + text + `" holds no PEM certificate; expected at least one -----BEGIN CERTIFICATE----- block`},
		{"cas CERTIFICATE block that is no certificate", origin(map[string]any{"cas": []any{badCert}}),
			`downstream: option "cas": "` + badCert + `" holds no PEM certificate; expected at least one -----BEGIN CERTIFICATE----- block`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseOptions(tc.raw)
			if err == nil {
				t.Fatalf("ParseOptions(%v) = %+v, want error %q", tc.raw, c, tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n got %s\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Fatalf("a failed parse returned %+v", c)
			}
		})
	}
}

func TestParseOptionsUnreadableCA(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads every file")
	}
	dir := t.TempDir()
	ca := writeCA(t, dir)
	if err := os.Chmod(ca, 0); err != nil {
		t.Fatal(err)
	}
	_, err := ParseOptions(origin(map[string]any{"cas": []any{ca}}))
	want := `downstream: option "cas": cannot read "` + ca + `": permission denied; expected a readable PEM CA certificate`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %s", err, want)
	}
}

// parseYAML parses a whole registry configuration the way the binary does.
func parseYAML(t *testing.T, doc string) *configuration.Configuration {
	t.Helper()
	config, err := configuration.Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("configuration.Parse: %v\n%s", err, doc)
	}
	return config
}

// registryYAML is a whole registry configuration around a downstream options
// block (indented by 8 spaces in the result).
func registryYAML(deleteEnabled string, options string) string {
	var b strings.Builder
	b.WriteString("version: 0.1\nstorage:\n")
	if deleteEnabled != "" {
		b.WriteString("  delete:\n    enabled: " + deleteEnabled + "\n")
	}
	b.WriteString("  inmemory: {}\nhttp:\n  addr: 127.0.0.1:5000\nmiddleware:\n  registry:\n    - name: downstream\n      options:\n")
	for _, line := range strings.Split(strings.Trim(options, "\n"), "\n") {
		b.WriteString("        " + line + "\n")
	}
	return b.String()
}

func TestParseOptionsFromYAML(t *testing.T) {
	ca := writeCA(t, t.TempDir())
	cases := []struct {
		name    string
		options string
		hosts   []string
		check   func(t *testing.T, c Config)
	}{
		{"seed 004: DTR form, origin only", `
blobttl: 24h
upstreams:
  - originhost: https://dtr.example.com
cas:
  - ` + ca,
			[]string{"https://dtr.example.com"},
			func(t *testing.T, c Config) {
				if c.BlobTTL != 24*time.Hour || !reflect.DeepEqual(c.CAs, []string{ca}) {
					t.Errorf("got %+v", c)
				}
			}},
		{"seed 004: DTR form with upstreamhosts", `
blobttl: 24h
upstreams:
  - originhost: https://dtr.example.com
    upstreamhosts:
      - https://cache-a.example.com
      - https://cache-b.example.com:5000
`, []string{"https://cache-a.example.com", "https://cache-b.example.com:5000", "https://dtr.example.com"}, nil},
		{"seeds 000-002: URL-list form", `
blobttl: 24h
upstreams:
  - https://msr.example.com:443
cas:
  - ` + ca,
			[]string{"https://msr.example.com:443"}, nil},
		{"integer blobttl from YAML is nanoseconds", `
blobttl: 5000
upstreams: [https://msr.example.com]
`, []string{"https://msr.example.com"},
			func(t *testing.T, c Config) {
				if c.BlobTTL != 5000 {
					t.Errorf("blobttl %v, want 5µs", c.BlobTTL)
				}
			}},
		{"our own options", `
upstreams: [https://msr.example.com]
authttl: 0
dialtimeout: 5s
headertimeout: 20s
idletimeout: 40s
filltimeout: 2h
backoff: 1m
clientheadertimeout: 30s
clientidletimeout: 3m
`, []string{"https://msr.example.com"},
			func(t *testing.T, c Config) {
				want := Config{AuthTTL: 0, DialTimeout: 5 * time.Second, HeaderTimeout: 20 * time.Second, IdleTimeout: 40 * time.Second, FillTimeout: 2 * time.Hour, Backoff: time.Minute,
					ClientHeaderTimeout: 30 * time.Second, ClientIdleTimeout: 3 * time.Minute}
				c.Upstreams = Upstreams{}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("got %+v, want %+v", c, want)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			config := parseYAML(t, registryYAML("true", tc.options))
			if err := CheckConfiguration(config); err != nil {
				t.Fatalf("CheckConfiguration: %v", err)
			}
			c, err := ParseOptions(middlewareOptions(config))
			if err != nil {
				t.Fatalf("ParseOptions: %v", err)
			}
			if got := hostStrings(c); !reflect.DeepEqual(got, tc.hosts) {
				t.Errorf("Hosts() %q, want %q", got, tc.hosts)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestCheckConfiguration(t *testing.T) {
	const ups = "upstreams: [https://origin.example.com]"
	const blob = "blobttl: 24h\n" + ups
	cases := []struct {
		name string
		doc  string
		env  map[string]string
		want string // "" means valid
	}{
		{"blobttl with delete enabled", registryYAML("true", blob), nil, ""},
		{"blobttl without storage.delete", registryYAML("", blob), nil,
			`downstream: option "blobttl" (24h) needs storage.delete.enabled: true to expire content, but it is not set; expected storage.delete.enabled: true or no blobttl`},
		{"blobttl with delete disabled", registryYAML("false", "blobttl: 90m\n"+ups), nil,
			`downstream: option "blobttl" (1h30m) needs storage.delete.enabled: true to expire content, but it is not set; expected storage.delete.enabled: true or no blobttl`},
		{"blobttl with delete enabled a string", registryYAML(`"yes"`, "blobttl: 10s\n"+ups), nil,
			`downstream: option "blobttl" (10s) needs storage.delete.enabled: true to expire content, but it is not set; expected storage.delete.enabled: true or no blobttl`},
		{"blobttl with delete enabled by REGISTRY_STORAGE_DELETE_ENABLED", registryYAML("false", blob),
			map[string]string{"REGISTRY_STORAGE_DELETE_ENABLED": "true"}, ""},
		{"no blobttl, no delete", registryYAML("", ups), nil, ""},
		{"bad option", registryYAML("true", ups+"\nblobttl: 1d"), nil,
			`downstream: option "blobttl": found string "1d", expected ` + wantPositive},
		{"no options block", "version: 0.1\nstorage:\n  inmemory: {}\nmiddleware:\n  registry:\n    - name: downstream\n", nil,
			`downstream: option "upstreams" is missing; expected ` + wantUps},
		{"proxy.remoteurl with downstream", registryYAML("true", blob) + "proxy:\n  remoteurl: https://registry-1.docker.io\n", nil,
			`downstream: proxy.remoteurl (https://registry-1.docker.io) is set; expected either the downstream middleware or distribution's proxy, not both`},
		{"downstream twice", registryYAML("true", blob) + "    - name: downstream\n      options:\n        " + ups + "\n", nil,
			`downstream: middleware.registry lists "downstream" 2 times; expected once`},
		{"disabled downstream is not checked", "version: 0.1\nstorage:\n  inmemory: {}\nmiddleware:\n  registry:\n    - name: downstream\n      disabled: true\n      options:\n        blobttl: 1d\n", nil, ""},
		{"auth section with downstream", registryYAML("true", blob) + "auth:\n  silly:\n    realm: x\n    service: y\n", nil,
			`downstream: auth.silly is set; expected no auth section, because the origin authorizes every request made through the cache`},
		{"no downstream: proxy alone is fine", "version: 0.1\nstorage:\n  inmemory: {}\nproxy:\n  remoteurl: https://registry-1.docker.io\n", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			err := CheckConfiguration(parseYAML(t, tc.doc))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("CheckConfiguration: %v\n%s", err, tc.doc)
			case tc.want != "" && err == nil:
				t.Fatalf("CheckConfiguration accepted\n%s", tc.doc)
			case tc.want != "" && err.Error() != tc.want:
				t.Fatalf("error\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}

func TestConfigured(t *testing.T) {
	for doc, want := range map[string]bool{
		"version: 0.1\nstorage:\n  inmemory: {}\n":                                                                         false,
		"version: 0.1\nstorage:\n  inmemory: {}\nmiddleware:\n  registry:\n    - name: downstream\n":                       true,
		"version: 0.1\nstorage:\n  inmemory: {}\nmiddleware:\n  registry:\n    - name: downstream\n      disabled: true\n": false,
	} {
		if got := Configured(parseYAML(t, doc)); got != want {
			t.Errorf("Configured = %v, want %v for\n%s", got, want, doc)
		}
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour:          "24h",
		90 * time.Minute:        "1h30m",
		time.Hour + time.Second: "1h0m1s",
		10 * time.Second:        "10s",
		1500 * time.Millisecond: "1.5s",
		5 * time.Minute:         "5m",
		100:                     "100ns",
	} {
		if got := config.ShortDuration(d); got != want {
			t.Errorf("config.ShortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

// New refuses a Config that would fail every request, instead of
// panicking on the first one.
func TestNewValidatesConfig(t *testing.T) {
	valid, err := ParseOptions(map[string]any{"upstreams": []any{"https://origin.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	zeroFill := valid
	zeroFill.FillTimeout = 0
	badURL := valid
	badURL.Upstreams.Origin = &url.URL{Scheme: "ftp", Host: "origin.example.com"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"zero value", Config{}, "downstream: Config.Upstreams.Origin is nil; expected the origin's URL (ParseOptions fills it from the upstreams option)"},
		{"zero fill timeout", zeroFill, "downstream: Config.FillTimeout is 0s; expected a positive duration"},
		{"bad scheme", badURL, `downstream: Config.Upstreams holds "ftp://origin.example.com"; expected http:// or https:// and a host`},
	} {
		_, err := New(tc.cfg, nil, Options{Driver: inmemory.New()})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: New error %v, want %q", tc.name, err, tc.want)
		}
	}
	want := "downstream: Options.Driver is nil; expected the storage driver under the local namespace"
	if _, err := New(valid, nil, Options{}); err == nil || err.Error() != want {
		t.Fatalf("New without a driver: %v, want %q", err, want)
	}
}
