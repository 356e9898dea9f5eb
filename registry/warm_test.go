package registry_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// warmFixture is an htpasswd origin with two images sharing a layer, and
// a cache configuration over a storage directory of its own.
type warmFixture struct {
	origin  *regtest.Server
	app     regtest.Image // base/app:1.4
	other   regtest.Image // base/other:1, sharing app's first layer
	config  string        // the cache's configuration file
	root    string        // its storage
	creds   string        // a Docker config file with alice's credentials
	badAuth string        // one with a wrong password
}

func newWarmFixture(t *testing.T, extraOptions string) *warmFixture {
	t.Helper()
	f := &warmFixture{}
	f.origin = regtest.StartOrigin(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}))
	f.app = regtest.RandomImage(2501, 3, 96<<10)
	f.app.Repo, f.app.Tag = "base/app", "1.4"
	f.other = regtest.WithLayers(f.app, [][]byte{f.app.Layers[0], regtest.RandomImage(2502, 1, 80<<10).Layers[0]})
	f.other.Repo, f.other.Tag = "base/other", "1"
	for _, img := range []regtest.Image{f.app, f.other} {
		if err := regtest.Push(t.Context(), f.origin.URL, "alice", "alice-pw", img); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	f.root = filepath.Join(dir, "storage")
	f.config = filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: %s
http:
  addr: %s
middleware:
  registry:
    - name: downstream
      options:
        upstreams:
          - %s
%s`, f.root, freeAddr(t), f.origin.URL, extraOptions)
	if err := os.WriteFile(f.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	f.creds = writeDockerConfig(t, dir, "good.json", f.origin.Host, "alice", "alice-pw")
	f.badAuth = writeDockerConfig(t, dir, "bad.json", f.origin.Host, "alice", "wrong")
	return f
}

// writeDockerConfig writes a Docker config file as docker login does.
func writeDockerConfig(t *testing.T, dir, name, host, user, pass string) string {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	}})
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// blobGets counts the origin's GETs of dgst in repo.
func (f *warmFixture) blobGets(repo string, dgst digest.Digest) int {
	return f.origin.Counts.Get("GET", "/v2/"+repo+"/blobs/"+dgst.String())
}

// blobs lists every blob of img: config and layers.
func blobs(img regtest.Image) [][]byte { return append([][]byte{img.Config}, img.Layers...) }

// stored reports whether dgst's data is in the filesystem storage.
func (f *warmFixture) stored(dgst digest.Digest) bool {
	_, err := os.Stat(filepath.Join(f.root, "docker/registry/v2/blobs/sha256", dgst.Encoded()[:2], dgst.Encoded(), "data"))
	return err == nil
}

// TestWarmCommand runs `content-cache warm` as users do, output in a pipe:
// one plain line per image and a summary; every blob fetched once and
// stored; a second run fetches no blob again; a failing image gives exit
// code 1 and is named.
func TestWarmCommand(t *testing.T) {
	f := newWarmFixture(t, "")
	env := childEnv("DOCKER_CONFIG=" + t.TempDir()) // no credentials but the file's
	appRef := f.origin.Host + "/base/app:1.4"

	code, stdout, stderr := runToExit(t, env, "warm", "--credentials", f.creds, f.config, appRef, "base/other:1")
	if code != 0 {
		t.Fatalf("warm: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("warm printed %d lines, want one per image and a summary:\n%s", len(lines), stdout)
	}
	if want := "warmed " + appRef + " " + f.app.Digest.String() + ": 4 blobs, 4 fetched"; !strings.HasPrefix(lines[0], want) {
		t.Errorf("line 1 = %q, want prefix %q", lines[0], want)
	}
	// base/other shares its first layer with base/app: stored by the first
	// image, it is not fetched again.
	if want := "warmed base/other:1 " + f.other.Digest.String() + ": 3 blobs, 2 fetched"; !strings.HasPrefix(lines[1], want) {
		t.Errorf("line 2 = %q, want prefix %q", lines[1], want)
	}
	if want := "warm: 2 of 2 images warmed;"; !strings.HasPrefix(lines[2], want) {
		t.Errorf("summary = %q, want prefix %q", lines[2], want)
	}
	for _, img := range []regtest.Image{f.app, f.other} {
		for _, b := range blobs(img) {
			d := digest.FromBytes(b)
			if !f.stored(d) {
				t.Errorf("%s of %s not stored after warm", d, img.Repo)
			}
		}
	}
	shared := digest.FromBytes(f.app.Layers[0])
	if n := f.blobGets("base/app", shared) + f.blobGets("base/other", shared); n != 1 {
		t.Errorf("the shared layer was fetched from the origin %d times, want 1", n)
	}
	before := f.origin.Counts.Snapshot()

	// A second run: everything is stored; no blob is fetched again.
	code, stdout, stderr = runToExit(t, env, "warm", "--credentials", f.creds, f.config, appRef, "base/other:1")
	if code != 0 {
		t.Fatalf("second warm: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "warm: 2 of 2 images warmed; 0 B fetched in 0 blobs, 7 blobs already stored") {
		t.Errorf("second warm's summary does not say everything was stored:\n%s", stdout)
	}
	for k, n := range f.origin.Counts.Snapshot() {
		if strings.HasPrefix(k, "GET ") && strings.Contains(k, "/blobs/") && n != before[k] {
			t.Errorf("second warm: origin %s: %d times, was %d: a stored blob was fetched again", k, n, before[k])
		}
	}

	// A failing image: exit 1, named on stderr and in the summary; the
	// others are still warmed.
	code, stdout, stderr = runToExit(t, env, "warm", "--credentials", f.creds, f.config, "base/app:1.4", "base/missing:1")
	if code != 1 {
		t.Fatalf("warm with a missing image: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "failed base/missing:1: manifest 1: 404") {
		t.Errorf("stdout does not name the failed image with the origin's answer:\n%s", stdout)
	}
	if want := "content-cache: warm: 1 of 2 images failed: base/missing:1\n"; stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}

	// Refused credentials: the origin's 401, exit 1.
	code, stdout, _ = runToExit(t, env, "warm", "--credentials", f.badAuth, f.config, "base/app:1.4")
	if code != 1 || !strings.Contains(stdout, "failed base/app:1.4: manifest 1.4: 401 Unauthorized") {
		t.Errorf("warm with a wrong password: exit %d, stdout:\n%s", code, stdout)
	}
}

// TestWarmCommandTerminal runs `content-cache warm` on a pseudo-terminal:
// it draws a progress display (mpb's bars: bytes, layers, rate; redrawn
// with escape codes while the run lasts, which a run this small may not
// outlast), then the same summary.
func TestWarmCommandTerminal(t *testing.T) {
	f := newWarmFixture(t, "")
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 160}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "warm", "--credentials", f.creds, f.config, "base/app:1.4", "base/missing:1")
	cmd.Env = childEnv("DOCKER_CONFIG=" + t.TempDir())
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = tty, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()                // the child holds it
	out, _ := io.ReadAll(ptmx) // until the child closes it (EIO on Linux)
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("warm on a terminal with a missing image: %v, want exit code 1\noutput:\n%q\nstderr:\n%s", err, out, stderr.String())
	}
	text := string(out)
	for _, want := range []string{
		"[=====",      // the bars: drawn only on a terminal (redrawn in place while the run lasts)
		"4/4 layers",  // layers
		"KiB / ",      // bytes against the total
		"iB/s",        // rate
		" done",       // the finished image's bar
		" failed\r\n", // the failed one's
		"warmed base/app:1.4 " + f.app.Digest.String(),
		"warm: 1 of 2 images warmed;",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, text)
		}
	}
	if want := "content-cache: warm: 1 of 2 images failed: base/missing:1\n"; stderr.String() != want {
		t.Errorf("stderr = %q, want %q", stderr.String(), want)
	}
}

// TestWarmCommandBadInput: each bad flag or argument stops the command
// with one line naming it, before anything is fetched.
func TestWarmCommandBadInput(t *testing.T) {
	f := newWarmFixture(t, "")
	env := childEnv("DOCKER_CONFIG=" + t.TempDir())
	list := filepath.Join(t.TempDir(), "images.txt")
	if err := os.WriteFile(list, []byte("# images to warm\n\nbase/app:1.4  # the app\nBase/App:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notJSON := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(notJSON, []byte("user:password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no image", []string{"warm", f.config},
			"content-cache: warm: no IMAGE given; expected at least one image reference, or --file LIST"},
		{"no config", []string{"warm"},
			"content-cache: requires at least 1 arg(s), only received 0"},
		{"unknown flag", []string{"warm", "--password", "x", f.config, "base/app:1.4"},
			"content-cache: unknown flag: --password"},
		{"bad platform", []string{"warm", "--platform", "linux", f.config, "base/app:1.4"},
			`content-cache: warm: platform "linux": expected os/arch[/variant] such as linux/amd64 or linux/arm64/v8`},
		{"bad reference", []string{"warm", f.config, "base/App:1.4"},
			`content-cache: warm: image "base/App:1.4" is not an image reference ("base/App:1.4": repository name must be lowercase); expected registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>`},
		{"bad reference in the list", []string{"warm", "--file", list, f.config},
			`content-cache: warm: image "Base/App:1" is not an image reference ("Base/App:1": repository name must be lowercase); expected registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>`},
		{"registry not served", []string{"warm", f.config, "registry.example.com/base/app:1.4"},
			`content-cache: warm: image "registry.example.com/base/app:1.4" names registry registry.example.com, which this cache does not serve; expected the default registry's host (` + f.origin.Host + `), or no host for the default registry`},
		{"missing list", []string{"warm", "--file", "/nonexistent/images.txt", f.config},
			"content-cache: warm: --file: open /nonexistent/images.txt: no such file or directory"},
		{"missing credentials", []string{"warm", "--credentials", "/nonexistent/config.json", f.config, "base/app:1.4"},
			`content-cache: warm: credentials: cannot read "/nonexistent/config.json": no such file or directory; expected a readable Docker config file (config.json)`},
		{"credentials not JSON", []string{"warm", "--credentials", notJSON, f.config, "base/app:1.4"},
			`content-cache: warm: credentials: "` + notJSON + `" is not a Docker config file (not a JSON object); expected a file such as docker login writes, {"auths": {...}}`},
		{"not a cache", []string{"warm", badConfig(t, func(s string) string { return s[:strings.Index(s, "middleware:")] }), "base/app:1.4"},
			"content-cache: warm: the configuration has no downstream middleware; expected the configuration of a content cache"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runToExit(t, env, tc.args...)
			if code != 1 || strings.TrimSuffix(stderr, "\n") != tc.want {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and:\n%s", code, stderr, tc.want)
			}
		})
	}
	for k, v := range f.origin.Counts.Snapshot() {
		if strings.HasPrefix(k, "GET ") {
			t.Errorf("bad input reached the origin: %s ×%d", k, v)
		}
	}
}

// TestWarmOptionServe: a cache started with the warm option warms its
// images at startup, through the binary's registry client, and the
// cache's own pulls of them are hits.
func TestWarmOptionServe(t *testing.T) {
	dir := t.TempDir()
	// The credentials file must exist before the configuration names it.
	f := newWarmFixture(t, "")
	creds := writeDockerConfig(t, dir, "warm.json", f.origin.Host, "alice", "alice-pw")
	f2 := *f
	cfg, err := os.ReadFile(f.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, []byte("        warm:\n          images: [base/app:1.4, "+f.origin.Host+"/base/other:1]\n          interval: 1h\n          credentials: "+creds+"\n")...)
	f2.config = filepath.Join(dir, "config.yml")
	if err := os.WriteFile(f2.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, "cache", childEnv(), "serve", f2.config)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	want := append(blobs(f.app), blobs(f.other)...)
	for {
		missing := 0
		for _, b := range want {
			if !f.stored(digest.FromBytes(b)) {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		select {
		case <-p.done:
			t.Fatalf("the cache exited: %v", p.err)
		case <-ctx.Done():
			t.Fatalf("%d blobs not warmed within 60s", missing)
		case <-time.After(regtest.PollInterval):
		}
	}
	shared := digest.FromBytes(f.app.Layers[0])
	if n := f.blobGets("base/app", shared) + f.blobGets("base/other", shared); n != 1 {
		t.Errorf("the shared layer was fetched %d times, want 1", n)
	}
}

// TestWarmCommandBesideServer: the command warms the storage a running
// cache serves (no lock, no restart): the cache's pulls of what it warmed
// are hits, and the origin sent each blob once.
func TestWarmCommandBesideServer(t *testing.T) {
	f := newWarmFixture(t, "")
	p := start(t, "cache", childEnv(), "serve", f.config)
	cfg, err := os.ReadFile(f.config)
	if err != nil {
		t.Fatal(err)
	}
	addr := strings.TrimSpace(strings.SplitN(strings.SplitN(string(cfg), "addr: ", 2)[1], "\n", 2)[0])
	waitReady(t, p, http.DefaultClient, "http://"+addr)

	code, stdout, stderr := runToExit(t, childEnv("DOCKER_CONFIG="+t.TempDir()), "warm", "--credentials", f.creds, f.config, "base/app:1.4")
	if code != 0 {
		t.Fatalf("warm beside a running cache: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, b := range blobs(f.app) {
		d := digest.FromBytes(b)
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/base/app/blobs/"+d.String(), nil)
		req.SetBasicAuth("alice", "alice-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != d {
			t.Fatalf("GET %s through the running cache: %s, %d bytes", d, resp.Status, len(body))
		}
		if n := f.blobGets("base/app", d); n != 1 {
			t.Errorf("blob %s: %d origin GETs, want 1 (the command's): the running cache did not find what it stored", d, n)
		}
	}
}
