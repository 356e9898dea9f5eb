package conformance

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/internal/regtest"
)

// imageTag is the tag TestImage builds in its private dockerd.
const imageTag = "content-cache:test"

// TestImage builds the container image as `make image` does (the static
// binary, deploy/image/build.sh, FROM scratch, nothing pulled) in a
// private dockerd, checks its layout (entrypoint, default config, user,
// port, volume, CA bundle), and pulls through it with `docker pull`
// twice: once run with configs/cache.yml as its default config, once run
// as the DTR documentation's `docker run ... /config.yml` line does. Each
// run pulls from an HTTPS origin the test starts, whose CA is mounted as
// the config's `cas` names it; a warm pull after `docker rmi` must fetch
// no blob from the origin, which proves the non-root user stored them in
// the volume. It logs the image's size.
func TestImage(t *testing.T) {
	e := startDockerd(t)
	d := newDocker(t, e)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}

	// The binary as `make build` makes it: static, so it runs on scratch.
	bin := filepath.Join(t.TempDir(), "content-cache")
	build := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-o", bin, "./cmd/content-cache")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	script := exec.CommandContext(t.Context(), "deploy/image/build.sh", bin, imageTag)
	script.Dir, script.Env = root, d.env
	out, err := script.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/image/build.sh: %v\n%s", err, out)
	}
	t.Logf("deploy/image/build.sh: %s", strings.TrimSpace(string(out)))

	checkImageConfig(t, d)
	checkImageFiles(t, d, root)

	ca := regtest.NewCA(t)
	origin := regtest.StartOriginTLS(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}), ca)
	img := regtest.DockerTarImage(420, 3)
	img.Repo, img.Tag = "private/app", "v1"
	if err := regtest.PushWith(t.Context(), ca.Client(), origin.URL, "alice", "alice-pw", img); err != nil {
		t.Fatalf("push: %v", err)
	}
	sample, err := os.ReadFile(filepath.Join(root, "configs", "cache.yml"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("default-config", func(t *testing.T) {
		// configs/cache.yml as the image's own config, with the test's
		// origin and a free port (the container shares the host's network).
		dir := t.TempDir()
		host := freeAddr(t)
		cfg := writeWorld(t, dir, "cache.yml", cacheConfig(t, sample, origin.URL, host, ""))
		caFile := writeWorld(t, dir, "origin-ca.pem", caPEM)
		runContainer(t, d, "cc-default",
			"--detach", "--network", "host",
			"--volume", cfg+":/etc/content-cache/config.yml:ro",
			"--volume", caFile+":/certs/origin-ca.pem:ro",
			imageTag) // no argument: the image's default config
		pullTwice(t, d, origin, img, host)
	})

	t.Run("dtr-docker-run", func(t *testing.T) {
		// The DTR documentation's line (seed 004), on the host's network:
		// its --publish is then moot, the cache listens on the host.
		dir := t.TempDir()
		host := freeAddr(t)
		_, port, _ := net.SplitHostPort(host)
		cfg := writeWorld(t, dir, "config.yml", cacheConfig(t, sample, origin.URL, host, "/certs/dtr-ca.pem"))
		caFile := writeWorld(t, dir, "dtr-ca.pem", caPEM)
		runContainer(t, d, "content-cache",
			"--detach", "--restart", "always", "--network", "host",
			"--publish", port+":"+port,
			"--volume", caFile+":/certs/dtr-ca.pem",
			"--volume", cfg+":/config.yml",
			imageTag, "/config.yml")
		pullTwice(t, d, origin, img, host)
	})
}

// TestDockerfilesShareFinalStage checks that the multi-stage Dockerfile
// (for those who can pull golang) and deploy/image/Dockerfile (make image,
// offline) end in the same stage, so both images have the same layout.
func TestDockerfilesShareFinalStage(t *testing.T) {
	final := func(path string, strip *strings.Replacer) []string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			if strings.HasPrefix(l, "FROM ") {
				lines = nil
			}
			lines = append(lines, strip.Replace(l))
		}
		return lines
	}
	multi := final("../Dockerfile", strings.NewReplacer("--from=build ", "", "/out/", ""))
	offline := final("../deploy/image/Dockerfile", strings.NewReplacer())
	if !slices.Equal(multi, offline) {
		t.Errorf("final stages differ:\nDockerfile:\n  %s\ndeploy/image/Dockerfile:\n  %s",
			strings.Join(multi, "\n  "), strings.Join(offline, "\n  "))
	}
	if len(offline) == 0 || offline[0] != "FROM scratch" {
		t.Errorf("deploy/image/Dockerfile: final stage %q, want FROM scratch (nothing to pull)", offline)
	}
}

// checkImageConfig checks the image's entrypoint, default argument, user,
// port and volume.
func checkImageConfig(t *testing.T, d *tool) {
	t.Helper()
	var cfg []struct {
		Size   int64
		Config struct {
			User         string
			Entrypoint   []string
			Cmd          []string
			ExposedPorts map[string]any
			Volumes      map[string]any
		}
	}
	if err := json.Unmarshal(d.run(t, "image", "inspect", imageTag), &cfg); err != nil || len(cfg) != 1 {
		t.Fatalf("docker image inspect: %v (%d images)", err, len(cfg))
	}
	c := cfg[0].Config
	t.Logf("image %s: %d bytes (%.1f MiB)", imageTag, cfg[0].Size, float64(cfg[0].Size)/(1<<20))
	if want := []string{"/usr/local/bin/content-cache", "serve"}; !slices.Equal(c.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", c.Entrypoint, want)
	}
	if want := []string{"/etc/content-cache/config.yml"}; !slices.Equal(c.Cmd, want) {
		t.Errorf("cmd %q, want %q", c.Cmd, want)
	}
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 (non-root)", c.User)
	}
	if _, ok := c.ExposedPorts["5000/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v, want 5000/tcp", c.ExposedPorts)
	}
	if _, ok := c.Volumes["/var/lib/registry"]; !ok || len(c.Volumes) != 1 {
		t.Errorf("volumes %v, want /var/lib/registry", c.Volumes)
	}
}

// checkImageFiles copies files out of a container of the image (docker
// cp, each a small tar: exporting the whole image is slow on vfs) and
// checks them: the CA bundle, the non-root user, configs/cache.yml as the
// default config, /var/lib/registry owned by that user, /tmp. The binary
// is checked by running it.
func checkImageFiles(t *testing.T, d *tool, root string) {
	t.Helper()
	cid := strings.TrimSpace(string(d.run(t, "create", "--network", "none", imageTag)))
	defer d.run(t, "rm", cid)
	// cp returns the first entry's header and content.
	cp := func(path string) (*tar.Header, []byte) {
		t.Helper()
		r := d.exec(t, "", "cp", cid+":"+path, "-")
		if r.err != nil {
			t.Errorf("docker cp %s: %v\n%s", path, r.err, r.output)
			return nil, nil
		}
		tr := tar.NewReader(bytes.NewReader(r.stdout))
		h, err := tr.Next()
		if err != nil {
			t.Errorf("docker cp %s: %v", path, err)
			return nil, nil
		}
		b, _ := io.ReadAll(tr)
		return h, b
	}
	bundle, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if _, got := cp("/etc/ssl/certs/ca-certificates.crt"); err == nil && !bytes.Equal(got, bundle) {
		t.Errorf("/etc/ssl/certs/ca-certificates.crt: %d bytes, want the host's %d", len(got), len(bundle))
	}
	_, passwd := cp("/etc/passwd")
	_, group := cp("/etc/group")
	if !bytes.Contains(passwd, []byte(":65532:65532:")) || !bytes.Contains(group, []byte(":65532:")) {
		t.Errorf("/etc/passwd, /etc/group: no user and group 65532:\n%s%s", passwd, group)
	}
	sample, err := os.ReadFile(filepath.Join(root, "configs", "cache.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, got := cp("/etc/content-cache/config.yml"); !bytes.Equal(got, sample) {
		t.Errorf("/etc/content-cache/config.yml is not configs/cache.yml")
	}
	if h, _ := cp("/var/lib/registry"); h == nil || h.Typeflag != tar.TypeDir || h.Uid != 65532 || h.Gid != 65532 {
		t.Errorf("/var/lib/registry: %+v, want a directory owned by 65532:65532", h)
	}
	if h, _ := cp("/tmp"); h == nil || h.Mode&0o1777 != 0o1777 {
		t.Errorf("/tmp: %+v, want mode 1777", h)
	}
	if r := d.exec(t, "", "cp", cid+":/bin/sh", "-"); r.err == nil {
		t.Errorf("/bin/sh exists in a scratch image")
	}
}

// cacheConfig is configs/cache.yml with the test's origin, listen address
// and, if caPath is not empty, another path for the origin's CA.
func cacheConfig(t *testing.T, sample []byte, origin, addr, caPath string) []byte {
	t.Helper()
	s := string(sample)
	for old, repl := range map[string]string{
		"originhost: https://registry.example.com": "originhost: " + origin,
		"addr: :5000": "addr: " + addr,
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("configs/cache.yml has no %q to replace", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	if caPath != "" {
		s = strings.Replace(s, "- /certs/origin-ca.pem", "- "+caPath, 1)
	}
	return []byte(s)
}

// writeWorld writes a file the container's non-root user can read.
func writeWorld(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// freeAddr is a loopback address nothing listens on (regtest.FreeAddr).
func freeAddr(t *testing.T) string { return regtest.FreeAddr(t) }

// runContainer runs `docker run --name name args...`, removes the
// container when the test ends (logging its output if the test failed),
// and waits until the cache answers on the host's loopback.
func runContainer(t *testing.T, d *tool, name string, args ...string) {
	t.Helper()
	d.run(t, append([]string{"run", "--name", name}, args...)...)
	t.Cleanup(func() {
		// t.Context() is done by now: these run on their own.
		docker := func(args ...string) ([]byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, d.path, args...)
			cmd.Env = d.env
			return cmd.CombinedOutput()
		}
		if t.Failed() {
			out, _ := docker("logs", name)
			t.Logf("docker logs %s:\n%s", name, out)
		}
		if out, err := docker("rm", "--force", name); err != nil {
			t.Errorf("docker rm --force %s: %v\n%s", name, err, out)
		}
	})
}

// pullTwice pulls img through the cache at host with `docker pull` as
// alice, cold and then warm after `docker rmi`, checks the image each
// time, and that the origin served each blob once.
func pullTwice(t *testing.T, d *tool, origin *regtest.Server, img regtest.Image, host string) {
	t.Helper()
	waitAnswers(t, "http://"+host+"/v2/")
	f := &dockerFixture{origin: origin, cache: &regtest.Server{Host: host}, img: img}
	d.runStdin(t, "alice-pw", "login", host, "-u", "alice", "--password-stdin")
	blobs := f.blobPaths()
	before := map[string]int{}
	for _, p := range blobs {
		before[p] = origin.Counts.Get("GET", p)
	}
	d.run(t, "pull", f.ref())
	checkDockerImage(t, d, f)
	cold := map[string]int{}
	for _, p := range blobs {
		cold[p] = origin.Counts.Get("GET", p)
		if cold[p]-before[p] != 1 {
			t.Errorf("cold pull: the origin got %d GETs of %s, want 1", cold[p]-before[p], p)
		}
	}
	d.run(t, "rmi", f.ref())
	d.run(t, "pull", f.ref())
	checkDockerImage(t, d, f)
	for _, p := range blobs {
		if n := origin.Counts.Get("GET", p) - cold[p]; n != 0 {
			t.Errorf("warm pull: the origin got %d more GETs of %s, want 0: the cache did not keep it in /var/lib/registry", n, p)
		}
	}
	d.run(t, "rmi", f.ref())
}

// waitAnswers waits until url gives any HTTP answer.
func waitAnswers(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer within 30s: %v", url, err)
		case <-tick.C:
		}
	}
}
