package conformance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/content-cache/content-cache/internal/regtest"
)

// ociSuiteEnv names the OCI distribution-spec conformance program. `make
// conformance` builds it and sets this; without it the test is skipped.
const ociSuiteEnv = "CONTENT_CACHE_OCI_CONFORMANCE"

// ociResultsEnv overrides where the results go (default: results/, next to
// this file, which is git-ignored).
const ociResultsEnv = "CONTENT_CACHE_OCI_RESULTS"

// ociSuiteTimeout bounds one run of the suite.
const ociSuiteTimeout = 5 * time.Minute

// ociOff turns off what distribution v3.1.2 itself does not support (see
// ../shared REFERENCE: referrers API, OCI-Subject, sha512, non-distributable
// layers), so that the baseline has no failures of its own.
var ociOff = []string{
	"OCI_API_REFERRER=false",
	"OCI_DATA_SUBJECT=false",
	"OCI_DATA_SUBJECT_MISSING=false",
	"OCI_DATA_SUBJECT_LIST=false",
	"OCI_DATA_SHA512=false",
	"OCI_DATA_NONDISTRIBUTABLE=false",
}

// ociRun is one run of the suite and what it reported.
type ociRun struct {
	name   string
	counts map[string]int // Pass, FAIL, Skip, Disabled, Error, Total
	// tests counts the statuses of the leaf tests by name. Names repeat
	// (one test per tag, manifest, blob) in an order that varies between
	// runs, so runs are compared by these counts.
	tests map[string]map[string]int
	errs  map[string]string // leaf test name -> its first error line
	codes map[string]int    // HTTP status a failure reported -> how many
	rc    int
	raw   string
}

// TestOCIConformance runs the OCI distribution-spec conformance program on
// loopback, with token auth, against:
//
//   - the origin, pushing its own data (the baseline of what distribution
//     passes);
//   - the origin, read-only, over seeded content;
//   - a cache of the origin, read-only, cold then warm;
//   - a cache of that cache (a chain), read-only, cold then warm;
//   - the cache, pushing: every write must be refused, and none may reach
//     the origin.
//
// It fails when a test that passes read-only at the origin does not pass
// through the cache or the chain. The counts go to results/latest.md, the
// raw output of each run next to it.
func TestOCIConformance(t *testing.T) {
	suite := os.Getenv(ociSuiteEnv)
	if suite == "" {
		t.Skipf("%s is not set; run `make conformance`", ociSuiteEnv)
	}
	resultsDir := cmpOr(os.Getenv(ociResultsEnv), "results")
	if err := os.MkdirAll(resultsDir, 0o755); err != nil {
		t.Fatal(err)
	}

	ts := regtest.NewTokenServer(t, tokenUsers, acl)
	origin := regtest.StartOrigin(t, ts.AuthConfig())
	cache := regtest.StartCache(t, origin.URL, nil)
	chain := regtest.StartCache(t, cache.URL, nil)

	const roRepo = "conformance/ro"
	ro := seedReadOnly(t, origin.URL, roRepo)
	roEnv := append(slices.Clone(ociOff),
		"OCI_API_PUSH=false",
		"OCI_API_BLOBS_DELETE=false",
		"OCI_API_MANIFESTS_DELETE=false",
		"OCI_API_TAGS_DELETE=false",
		"OCI_REPO1="+roRepo,
		"OCI_REPO2="+roRepo,
		"OCI_RO_DATA_TAGS="+strings.Join(ro.tags, " "),
		"OCI_RO_DATA_MANIFESTS="+joinDigests(ro.manifests),
		"OCI_RO_DATA_BLOBS="+joinDigests(ro.blobs),
	)
	pushEnv := append(slices.Clone(ociOff), "OCI_REPO1=conformance/repo1", "OCI_REPO2=conformance/repo2")

	runs := []*ociRun{
		runOCISuite(t, suite, resultsDir, "origin-push", origin.Host, pushEnv),
		runOCISuite(t, suite, resultsDir, "origin-ro", origin.Host, roEnv),
		runOCISuite(t, suite, resultsDir, "cache-ro-cold", cache.Host, roEnv),
		runOCISuite(t, suite, resultsDir, "cache-ro-warm", cache.Host, roEnv),
		runOCISuite(t, suite, resultsDir, "chain-ro-cold", chain.Host, roEnv),
		runOCISuite(t, suite, resultsDir, "chain-ro-warm", chain.Host, roEnv),
	}

	before := writeRequests(origin)
	pushCache := runOCISuite(t, suite, resultsDir, "cache-push", cache.Host, pushEnv)
	runs = append(runs, pushCache)
	if after := writeRequests(origin); after != before {
		t.Errorf("the push run against the cache reached the origin with %d write requests, want 0", after-before)
	}

	for _, srv := range []*regtest.Server{cache, chain} {
		checkRefusals(t, srv, roRepo, ro.manifests[0], ro.blobs[0])
	}

	for _, r := range runs {
		if r.counts["Total"] == 0 {
			t.Errorf("%s: the suite reported no tests (rc %d); see %s", r.name, r.rc, filepath.Join(resultsDir, r.name+".txt"))
		}
	}
	if n := runs[0].counts["FAIL"] + runs[0].counts["Error"]; n != 0 {
		t.Errorf("origin-push: %d failures at the plain origin (the baseline should have none)", n)
	}
	baseline := runs[1]
	var regressions []string
	for _, r := range runs[2:6] {
		for name, st := range baseline.tests {
			if got := r.tests[name]; got["Pass"] < st["Pass"] {
				msg := fmt.Sprintf("%s: %q: %v at the origin, %v here", r.name, name, st, got)
				if e := r.errs[name]; e != "" {
					msg += ": " + e
				}
				regressions = append(regressions, msg)
			}
		}
	}
	slices.Sort(regressions)
	for _, m := range regressions {
		t.Error(m)
	}

	// Refused cleanly: each failure of the push run is a 405 (the write),
	// or a 404 or missing tag (reading what was never stored); never a 5xx
	// or anything else.
	for code, n := range pushCache.codes {
		if code != "405" && code != "404" && code != "tag missing from list" {
			t.Errorf("cache-push: %d failures with %q, want only 405 refusals and their 404s", n, code)
		}
	}
	refused := refusedSummary(pushCache)
	table := ociTable(runs, refused)
	t.Logf("OCI conformance results:\n%s", table)
	md := "# OCI distribution-spec conformance\n\n" +
		"Generated by `make conformance` on " + time.Now().UTC().Format(time.RFC3339) + ".\n\n" + table
	if len(regressions) > 0 {
		md += "\n## Regressions (pass at the origin, not through the cache)\n\n- " + strings.Join(regressions, "\n- ") + "\n"
	}
	if err := os.WriteFile(filepath.Join(resultsDir, "latest.md"), []byte(md), 0o644); err != nil {
		t.Error(err)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func joinDigests(ds []digest.Digest) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, " ")
}

// writeRequests counts the writes (anything but GET and HEAD) a server saw.
func writeRequests(s *regtest.Server) int {
	n := 0
	for k, v := range s.Counts.Snapshot() {
		m, _, _ := strings.Cut(k, " ")
		if m != http.MethodGet && m != http.MethodHead {
			n += v
		}
	}
	return n
}

// checkRefusals sends each kind of write to srv as alice (whom the origin
// would allow to push) and checks the cache answers 405 with the OCI error
// code UNSUPPORTED.
func checkRefusals(t *testing.T, srv *regtest.Server, repo string, manifest, blob digest.Digest) {
	t.Helper()
	c := &regtest.Client{Base: srv.URL, User: "alice", Pass: "alice-pw"}
	for _, w := range [][2]string{
		{http.MethodPost, "/v2/" + repo + "/blobs/uploads/"},
		{http.MethodPost, "/v2/" + repo + "/blobs/uploads/?mount=" + blob.String() + "&from=other/repo"},
		{http.MethodPatch, "/v2/" + repo + "/blobs/uploads/0a1b2c3d"},
		{http.MethodPut, "/v2/" + repo + "/blobs/uploads/0a1b2c3d?digest=" + blob.String()},
		{http.MethodPut, "/v2/" + repo + "/manifests/new-tag"},
		{http.MethodDelete, "/v2/" + repo + "/manifests/" + manifest.String()},
		{http.MethodDelete, "/v2/" + repo + "/manifests/v1"},
		{http.MethodDelete, "/v2/" + repo + "/blobs/" + blob.String()},
	} {
		resp, err := c.Do(t.Context(), w[0], w[1], nil)
		if err != nil {
			t.Errorf("%s %s %s: %v", srv.Host, w[0], w[1], err)
			continue
		}
		var body struct {
			Errors []struct{ Code string } `json:"errors"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || err != nil || len(body.Errors) == 0 || body.Errors[0].Code != "UNSUPPORTED" {
			t.Errorf("%s %s %s: %d %+v (decode: %v), want 405 UNSUPPORTED", srv.Host, w[0], w[1], resp.StatusCode, body, err)
		}
	}
}

// roSeed is what seedReadOnly pushed to the origin.
type roSeed struct {
	tags             []string
	manifests, blobs []digest.Digest
}

// seedReadOnly pushes to repo an image (v1), an index of two images
// (multi) and an OCI artifact (artifact).
func seedReadOnly(t *testing.T, originURL, repo string) roSeed {
	t.Helper()
	var s roSeed
	push := func(img regtest.Image) {
		t.Helper()
		img.Repo = repo
		if err := regtest.Push(t.Context(), originURL, "alice", "alice-pw", img); err != nil {
			t.Fatalf("seed %s:%s: %v", repo, img.Tag, err)
		}
		s.manifests = append(s.manifests, img.Digest)
		for _, b := range append([][]byte{img.Config}, img.Layers...) {
			if d := digest.FromBytes(b); !slices.Contains(s.blobs, d) {
				s.blobs = append(s.blobs, d)
			}
		}
	}
	app := regtest.RandomImage(100, 3, 32<<10)
	app.Tag = "v1"
	push(app)
	var children []regtest.Image
	for i := range 2 {
		img := regtest.RandomImage(int64(101+i), 2, 8<<10)
		img.Tag = "multi-" + strconv.Itoa(i)
		push(img)
		children = append(children, img)
	}
	for i := range children {
		children[i].Repo = repo
	}
	idx, err := regtest.PushIndex(t.Context(), originURL, "alice", "alice-pw", repo, "multi", children)
	if err != nil {
		t.Fatalf("seed index: %v", err)
	}
	s.manifests = append(s.manifests, idx)
	art := artifactImage(200)
	push(art)
	s.tags = []string{"v1", "multi-0", "multi-1", "multi", art.Tag}
	return s
}

// artifactImage is an OCI artifact: an empty config, an artifactType and
// one layer of a non-image media type.
func artifactImage(seed int64) regtest.Image {
	layer := []byte(fmt.Sprintf(`{"sbom":"example","seed":%d}`, seed))
	cfg := []byte("{}")
	m := v1.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    v1.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.sbom.v1+json",
		Config:       v1.DescriptorEmptyJSON,
		Layers: []v1.Descriptor{{
			MediaType: "application/vnd.example.sbom.v1+json",
			Digest:    digest.FromBytes(layer),
			Size:      int64(len(layer)),
		}},
		Annotations: map[string]string{"org.content-cache.regtest.seed": strconv.FormatInt(seed, 10)},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return regtest.Image{
		Repo: "regtest/artifact", Tag: "artifact",
		Manifest: raw, MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(raw),
		Config: cfg, Layers: [][]byte{layer},
	}
}

// runOCISuite runs the suite against host with token auth as alice, saves
// its output as name.txt in resultsDir and parses it. The exit code is not
// used: it is 0 with failures and read-only runs end in a panic.
func runOCISuite(t *testing.T, suite, resultsDir, name, host string, env []string) *ociRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ociSuiteTimeout)
	defer cancel()
	work := t.TempDir()
	cmd := exec.CommandContext(ctx, suite)
	cmd.Dir = work // no stray oci-conformance.yaml
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+host,
		"OCI_TLS=disabled",
		"OCI_USERNAME=alice",
		"OCI_PASSWORD=alice-pw",
		"OCI_RESULTS_DIR="+filepath.Join(work, "results"),
		"OCI_LOG=error",
	)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	rc := 0
	if ee, ok := err.(*exec.ExitError); ok {
		rc = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: run %s: %v", name, suite, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s: the suite did not finish within %v", name, ociSuiteTimeout)
	}
	r := parseOCIOutput(out.String())
	r.name, r.rc, r.raw = name, rc, out.String()
	if err := os.WriteFile(filepath.Join(resultsDir, name+".txt"), out.Bytes(), 0o644); err != nil {
		t.Error(err)
	}
	t.Logf("%s: %v in %v (rc %d)", name, r.counts, time.Since(start).Round(time.Millisecond), rc)
	return r
}

var (
	ociCountLine = regexp.MustCompile(`^\s+(Pass|Skip|Disabled|FAIL|Error|Total)\.*:\s+(\d+)$`)
	ociTestLine  = regexp.MustCompile(`^(\s*)(.+): (Pass|Skip|Disabled|FAIL|Error|Unknown)$`)
	// ociStatusInError finds the HTTP status in a failure such as "blob
	// post failed: unexpected status code, expected one of [202], received
	// 405" or "registry returned status 405".
	ociStatusInError = regexp.MustCompile(`(?:received|returned status) (\d{3})\b`)
)

// parseOCIOutput reads the suite's report: the tree of tests under "Test
// results" (leaves with their errors) and the summary counts.
func parseOCIOutput(out string) *ociRun {
	r := &ociRun{counts: map[string]int{}, tests: map[string]map[string]int{}, errs: map[string]string{}, codes: map[string]int{}}
	type line struct {
		indent       int
		name, status string
	}
	var tree []line
	inTree, inCounts := false, false
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	last := ""
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "Test results":
			inTree = true
			continue
		case strings.HasPrefix(l, "OCI Conformance Result:"):
			inCounts = true
			continue
		}
		if inTree {
			if l == "" {
				inTree = false
				continue
			}
			if m := ociTestLine.FindStringSubmatch(l); m != nil {
				tree = append(tree, line{len(m[1]), m[2], m[3]})
				last = m[2]
			} else if e := strings.TrimSpace(l); strings.HasPrefix(e, "- ") && last != "" {
				e = strings.TrimPrefix(e, "- ")
				if r.errs[last] == "" {
					r.errs[last] = e
				}
				if m := ociStatusInError.FindStringSubmatch(e); m != nil {
					r.codes[m[1]]++
				} else if strings.HasPrefix(e, "missing tag") {
					r.codes["tag missing from list"]++
				} else {
					r.codes["other"]++
				}
			}
		}
		if inCounts {
			if m := ociCountLine.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[2])
				r.counts[m[1]] = n
				if m[1] == "Total" {
					inCounts = false
				}
			}
		}
	}
	for i, l := range tree {
		if i+1 < len(tree) && tree[i+1].indent > l.indent {
			continue // not a leaf
		}
		if r.tests[l.name] == nil {
			r.tests[l.name] = map[string]int{}
		}
		r.tests[l.name][l.status]++
	}
	return r
}

// refusedSummary counts the HTTP statuses in the failures of a run.
func refusedSummary(r *ociRun) string {
	keys := make([]string, 0, len(r.codes))
	for k := range r.codes {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, r.codes[k]))
	}
	return strings.Join(parts, ", ")
}

func ociTable(runs []*ociRun, refused string) string {
	var b strings.Builder
	b.WriteString("| run | target | mode | pass | fail | error | skip | disabled | total |\n|---|---|---|--:|--:|--:|--:|--:|--:|\n")
	desc := map[string][2]string{
		"origin-push":   {"origin", "push, pull, delete (baseline)"},
		"origin-ro":     {"origin", "read-only, seeded"},
		"cache-ro-cold": {"cache", "read-only, cold"},
		"cache-ro-warm": {"cache", "read-only, warm"},
		"chain-ro-cold": {"cache → cache", "read-only, cold"},
		"chain-ro-warm": {"cache → cache", "read-only, warm"},
		"cache-push":    {"cache", "push, pull, delete (refusals expected)"},
	}
	for _, r := range runs {
		d := desc[r.name]
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %d | %d | %d | %d | %d |\n", r.name, d[0], d[1],
			r.counts["Pass"], r.counts["FAIL"], r.counts["Error"], r.counts["Skip"], r.counts["Disabled"], r.counts["Total"])
	}
	if refused != "" {
		b.WriteString("\ncache-push failures by the HTTP status received: " + refused +
			" (405: the write was refused; 404 and missing tags: reads of content whose push had been refused)\n")
	}
	return b.String()
}

// TestParseOCIOutput checks the parser on a report shaped like the suite's.
func TestParseOCIOutput(t *testing.T) {
	out := `Test results
OCI Conformance Test: FAIL
  OCI Conformance Test/ping: Pass
  OCI Conformance Test/read-only: FAIL
    OCI Conformance Test/read-only/pull: FAIL
      OCI Conformance Test/read-only/pull/tag: Pass
      OCI Conformance Test/read-only/pull/tag: FAIL
       - manifest get failed: unexpected status code, expected one of [200], received 502
      OCI Conformance Test/read-only/pull/tag: Pass
    OCI Conformance Test/read-only/push: Disabled

Configuration:
  registry: x

OCI Conformance Result: FAIL
  Pass..........................:          3
  Skip..........................:          0
  Disabled......................:          1
  FAIL..........................:          1
  Error.........................:          0
  Total.........................:          5

`
	r := parseOCIOutput(out)
	want := map[string]map[string]int{
		"OCI Conformance Test/ping":               {"Pass": 1},
		"OCI Conformance Test/read-only/pull/tag": {"Pass": 2, "FAIL": 1},
		"OCI Conformance Test/read-only/push":     {"Disabled": 1},
	}
	if fmt.Sprint(r.tests) != fmt.Sprint(want) {
		t.Errorf("tests = %v, want %v", r.tests, want)
	}
	if r.counts["Pass"] != 3 || r.counts["FAIL"] != 1 || r.counts["Total"] != 5 {
		t.Errorf("counts = %v", r.counts)
	}
	if r.codes["502"] != 1 || len(r.codes) != 1 {
		t.Errorf("codes = %v, want 502 once", r.codes)
	}
	if e := r.errs["OCI Conformance Test/read-only/pull/tag"]; !strings.HasSuffix(e, "received 502") {
		t.Errorf("first error = %q", e)
	}
}
