package downstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// The registries option: each entry an upstream set, keyed by its ns;
// timeouts, backoff and authttl default to the top level's.
func TestParseRegistries(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	pw := filepath.Join(dir, "hub-token")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ParseOptions(origin(map[string]any{
		"headertimeout": "7s",
		"registries": map[any]any{
			"Docker.IO": map[any]any{
				"upstreams": []any{"https://registry-1.docker.io"},
				"anonymous": map[any]any{"username": "cache-bot", "passwordfile": pw},
				"authttl":   "5s",
			},
			"ghcr.io": map[any]any{
				"upstreams": []any{map[any]any{"originhost": "https://ghcr.io", "upstreamhosts": []any{"https://ghcr-mirror.internal"}}},
				"cas":       []any{ca},
				"backoff":   "1m",
			},
			"localhost:5000": map[any]any{"upstreams": []any{"http://127.0.0.1:5000"}},
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	hub, ok := c.Registries["docker.io"]
	if !ok || len(c.Registries) != 3 {
		t.Fatalf("registries %v, want docker.io, ghcr.io, localhost:5000", c.Registries)
	}
	if hub.Upstreams.Origin.String() != "https://registry-1.docker.io" || hub.AuthTTL != 5*time.Second || hub.HeaderTimeout != 7*time.Second || hub.Backoff != DefaultBackoff {
		t.Errorf("docker.io: %+v", hub)
	}
	if hub.Anonymous == nil || hub.Anonymous.Username != "cache-bot" {
		t.Fatalf("docker.io anonymous: %+v", hub.Anonymous)
	}
	if s, err := hub.Anonymous.Secret(); err != nil || s != "s3cret" {
		t.Errorf("docker.io password: %q %v", s, err)
	}
	gh := c.Registries["ghcr.io"]
	if gh.Upstreams.Origin.String() != "https://ghcr.io" || len(gh.Upstreams.Caches) != 1 || len(gh.CAs) != 1 || gh.Backoff != time.Minute || gh.AuthTTL != DefaultAuthTTL {
		t.Errorf("ghcr.io: %+v", gh)
	}
	if c.Anonymous != nil || len(c.CAs) != 0 {
		t.Errorf("the default registry took an entry's options: %+v %v", c.Anonymous, c.CAs)
	}
	if got := c.Registries["localhost:5000"].Upstreams.Origin.String(); got != "http://127.0.0.1:5000" {
		t.Errorf("localhost:5000: %s", got)
	}
}

// Each bad registries or anonymous value stops startup with one line
// naming the option, the value and what is expected; no password is
// ever echoed.
func TestParseRegistriesErrors(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("hunter2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	up := []any{"https://registry-1.docker.io"}
	reg := func(key string, v any) map[string]any {
		return origin(map[string]any{"registries": map[any]any{key: v}})
	}
	anon := func(v any) map[string]any { return reg("docker.io", map[any]any{"upstreams": up, "anonymous": v}) }
	for _, tc := range []struct {
		name string
		raw  map[string]any
		want string
	}{
		{"not a mapping", origin(map[string]any{"registries": []any{"docker.io"}}),
			`downstream: option "registries": found list [docker.io], expected a mapping of registry host[:port] to its options, such as {docker.io: {upstreams: [https://registry-1.docker.io]}}`},
		{"two ports", reg("127.0.0.1:15000:80", map[any]any{"upstreams": up}),
			`downstream: option "registries": key "127.0.0.1:15000:80" is not a registry host[:port]: expected host or host:port; expected a registry host[:port] such as docker.io or registry.example.com:5000`},
		{"a URL as key", reg("https://ghcr.io", map[any]any{"upstreams": up}),
			`downstream: option "registries": key "https://ghcr.io" is not a registry host[:port]: the port must be a number from 1 to 65535; expected a registry host[:port] such as docker.io or registry.example.com:5000`},
		{"a path in the key", reg("ghcr.io/org", map[any]any{"upstreams": up}),
			`downstream: option "registries": key "ghcr.io/org" is not a registry host[:port]: expected a DNS name or an IP address; expected a registry host[:port] such as docker.io or registry.example.com:5000`},
		{"port 0", reg("ghcr.io:0", map[any]any{"upstreams": up}),
			`downstream: option "registries": key "ghcr.io:0" is not a registry host[:port]: the port must be a number from 1 to 65535; expected a registry host[:port] such as docker.io or registry.example.com:5000`},
		{"Docker Hub twice", origin(map[string]any{"registries": map[any]any{"docker.io": map[any]any{"upstreams": up}, "index.docker.io": map[any]any{"upstreams": up}}}),
			`downstream: option "registries": "docker.io" and "index.docker.io" name the same registry docker.io; expected each registry once`},
		{"the default registry", reg("origin.example.com:443", map[any]any{"upstreams": up}),
			`downstream: option "registries": "origin.example.com:443" is the default registry (option "upstreams" names its origin origin.example.com); expected only other registries here`},
		{"entry not a mapping", reg("ghcr.io", "https://ghcr.io"),
			`downstream: option "registries.ghcr.io": found string "https://ghcr.io", expected a mapping of options (anonymous, authttl, backoff, cas, dialtimeout, headertimeout, idletimeout, upstreams) with at least upstreams`},
		{"unknown option", reg("ghcr.io", map[any]any{"upstreams": up, "blobttl": "1h"}),
			`downstream: option "registries.ghcr.io": unknown option "blobttl"; valid options of a registry are anonymous, authttl, backoff, cas, dialtimeout, headertimeout, idletimeout, upstreams`},
		{"missing upstreams", reg("ghcr.io", map[any]any{"authttl": "1s"}),
			`downstream: option "registries.ghcr.io": option "upstreams" is missing; expected ` + wantUps},
		{"bad upstream", reg("ghcr.io", map[any]any{"upstreams": []any{"ghcr.io"}}),
			`downstream: option "registries.ghcr.io": option "upstreams": "ghcr.io" is not an upstream URL; expected http:// or https:// followed by host[:port]`},
		{"bad duration", reg("ghcr.io", map[any]any{"upstreams": up, "backoff": "1d"}),
			`downstream: option "registries.ghcr.io": option "backoff": found string "1d", expected ` + wantPositive},
		{"inline password", anon(map[any]any{"username": "bot", "password": "hunter2"}),
			`downstream: option "registries.docker.io": option "anonymous.password": an inline password is not accepted; expected passwordfile, an absolute path to a file holding it`},
		{"no passwordfile", anon(map[any]any{"username": "bot"}),
			`downstream: option "registries.docker.io": option "anonymous.passwordfile" is missing; expected {username: NAME, passwordfile: /absolute/path} (the account used for requests that carry no credentials)`},
		{"relative passwordfile", anon(map[any]any{"username": "bot", "passwordfile": "pw"}),
			`downstream: option "registries.docker.io": option "anonymous.passwordfile": found string "pw", expected an absolute path to a file holding the password or token`},
		{"unreadable passwordfile", anon(map[any]any{"username": "bot", "passwordfile": filepath.Join(dir, "nope")}),
			`downstream: option "registries.docker.io": option "anonymous.passwordfile": cannot read "` + filepath.Join(dir, "nope") + `": no such file or directory; expected a readable file holding the password or token`},
		{"empty passwordfile", anon(map[any]any{"username": "bot", "passwordfile": empty}),
			`downstream: option "registries.docker.io": option "anonymous.passwordfile": "` + empty + `" holds no password, or more than one line; expected the password or token alone`},
		{"no username", anon(map[any]any{"passwordfile": pw}),
			`downstream: option "registries.docker.io": option "anonymous.username" is missing; expected {username: NAME, passwordfile: /absolute/path} (the account used for requests that carry no credentials)`},
		{"username with a colon", anon(map[any]any{"username": "bot:hunter2", "passwordfile": pw}),
			`downstream: option "registries.docker.io": option "anonymous.username": found a string of 11 characters, expected a user name (no colon)`},
		{"unknown anonymous key", anon(map[any]any{"username": "bot", "passwordfile": pw, "token": "x"}),
			`downstream: option "registries.docker.io": option "anonymous": unknown key "token"; valid keys are passwordfile, username`},
		{"anonymous not a mapping", origin(map[string]any{"anonymous": "bot"}),
			`downstream: option "anonymous": found string "bot", expected {username: NAME, passwordfile: /absolute/path} (the account used for requests that carry no credentials)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseOptions(tc.raw)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Fatalf("error\n got %s\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error spans lines or echoes the password: %q", err)
			}
		})
	}
}

// anonymous on the default registry is accepted with a warning at
// startup saying what it means; on another registry, silently.
func TestAnonymousDefaultWarning(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	account := map[any]any{"username": "cache-bot", "passwordfile": pw}
	for _, tc := range []struct {
		name string
		raw  map[string]any
		warn bool
	}{
		{"default registry", origin(map[string]any{"anonymous": account}), true},
		{"another registry", origin(map[string]any{"registries": map[any]any{"docker.io": map[any]any{"upstreams": []any{"https://registry-1.docker.io"}, "anonymous": account}}}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseOptions(tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			logger, hook := logtest.NewNullLogger()
			c, err := New(cfg, nil, Options{Driver: inmemory.New(), Logger: logrus.NewEntry(logger), ManualSweep: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			var warned bool
			for _, e := range hook.AllEntries() {
				if strings.Contains(e.Message, "hunter2") {
					t.Errorf("the log holds the password: %q", e.Message)
				}
				if e.Level == logrus.WarnLevel && strings.Contains(e.Message, `option "anonymous" is set on the default registry`) &&
					strings.Contains(e.Message, "anyone who can reach this cache") && e.Data["username"] == "cache-bot" {
					warned = true
				}
			}
			if warned != tc.warn {
				t.Errorf("warned %v, want %v: %v", warned, tc.warn, hook.AllEntries())
			}
		})
	}
}
