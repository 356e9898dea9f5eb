package registry_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"

	"github.com/content-cache/content-cache/internal/regtest"
)

// monitoringDir holds the dashboards and alert rules.
const monitoringDir = "../deploy/monitoring"

// externalMetrics are the metrics the rules use that other exporters
// serve (the kubelet's volume statistics), with their labels. Everything
// named content_cache_* must be served by a running cache or origin.
var externalMetrics = map[string][]string{
	"kubelet_volume_stats_available_bytes": {"persistentvolumeclaim", "namespace", "node"},
	"kubelet_volume_stats_capacity_bytes":  {"persistentvolumeclaim", "namespace", "node"},
}

// targetLabels are added by Prometheus to every scraped series.
var targetLabels = []string{"instance", "job"}

// series is what a scrape shows: metric name -> label -> values seen.
type series map[string]map[string]map[string]bool

// TestMonitoringNamesExist starts an origin (with the contentcaches
// middleware, redirecting alice to the cache) and a cache as processes,
// sends traffic through both (a push, cold and warm pulls, a refused
// credential, a redirected blob GET), scrapes both debug servers' /metrics,
// and fails when a dashboard or an alert rule of deploy/monitoring names a
// metric, a label or a label value that the scrape does not have. It also
// checks the checker: made-up names must be reported.
func TestMonitoringNamesExist(t *testing.T) {
	got := scrapeRunning(t)
	names := make([]string, 0, len(got))
	for n := range got {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("scraped %d content_cache metrics: %s", len(names), strings.Join(names, " "))

	exprs := monitoringExprs(t)
	if len(exprs) < 20 {
		t.Fatalf("found %d expressions in deploy/monitoring, want the dashboards' and the rules'", len(exprs))
	}
	for _, e := range exprs {
		for _, err := range checkExpr(got, e.expr, e.legend) {
			t.Errorf("%s: %v\n  %s", e.where, err, e.expr)
		}
	}

	// The checker must bite.
	for expr, want := range map[string]string{
		`rate(content_cache_pulls_total[5m])`:                                 "content_cache_pulls_total",
		`sum(rate(content_cache_requests_total{reslt="hit"}[5m]))`:            `label "reslt"`,
		`sum(rate(content_cache_requests_total{result=~"hit|hitt"}[5m]))`:     `"hitt"`,
		`sum by (upstreem) (rate(content_cache_upstream_requests_total[5m]))`: `"upstreem"`,
	} {
		errs := checkExpr(got, expr, "")
		if len(errs) == 0 || !strings.Contains(fmt.Sprint(errs), want) {
			t.Errorf("checkExpr(%s) = %v, want an error naming %s", expr, errs, want)
		}
	}
	legendErrs := checkExpr(got, `sum by (kind) (rate(content_cache_requests_total[5m]))`, "{{upstream}}")
	if len(legendErrs) == 0 {
		t.Errorf("a legend naming a label the query does not keep was not reported")
	}
}

// TestMonitoringRules runs promtool on the alert rules (syntax and the unit
// tests of alerts_test.yml) and on the dashboards' queries (syntax, as
// recording rules with Grafana's variables filled in). promtool comes from
// Debian's prometheus package; the test skips without it unless CI is set.
func TestMonitoringRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool not found (CI is set, so not skipping); install Debian's prometheus package: %v", err)
		}
		t.Skipf("promtool not found; install Debian's prometheus package: %v", err)
	}
	run := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("promtool %s: %s", strings.Join(args, " "), strings.Join(strings.Fields(string(out)), " "))
		}
	}
	run(monitoringDir, "check", "rules", "alerts.yml")
	run(monitoringDir, "test", "rules", "alerts_test.yml")

	// The dashboards' queries as recording rules, for promtool's parser.
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, e := range monitoringExprs(t) {
		if strings.HasSuffix(e.where, ".json") || strings.Contains(e.where, ".json ") {
			rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query:%d", i), Expr: grafanaVars.Replace(e.expr)})
		}
	}
	if len(rules) == 0 {
		t.Fatal("no dashboard queries")
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboards.yml"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	run(dir, "check", "rules", "dashboards.yml")
}

// grafanaVars fills in the dashboards' variables for promtool.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")

// monitoringExpr is one query of a dashboard or a rule.
type monitoringExpr struct {
	where, expr, legend string
}

// monitoringExprs collects every query of deploy/monitoring: each
// dashboard's targets and variables, and each rule's expression.
func monitoringExprs(t *testing.T) []monitoringExpr {
	t.Helper()
	var out []monitoringExpr
	dashboards, err := filepath.Glob(filepath.Join(monitoringDir, "*.json"))
	if err != nil || len(dashboards) < 2 {
		t.Fatalf("want the cache's and the origin's dashboards in %s: %v %v", monitoringDir, dashboards, err)
	}
	for _, f := range dashboards {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d map[string]any
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		var walk func(path string, v any)
		walk = func(path string, v any) {
			switch v := v.(type) {
			case map[string]any:
				if e, ok := v["expr"].(string); ok {
					legend, _ := v["legendFormat"].(string)
					out = append(out, monitoringExpr{name + " " + path, e, legend})
				}
				if def, ok := v["definition"].(string); ok {
					// label_values(metric, label): the metric must have it.
					if m := regexp.MustCompile(`^label_values\((\w+),\s*(\w+)\)$`).FindStringSubmatch(def); m != nil {
						out = append(out, monitoringExpr{name + " " + path, m[1], "{{" + m[2] + "}}"})
					} else {
						t.Errorf("%s %s: variable query %q is not label_values(metric, label)", name, path, def)
					}
				}
				keys := make([]string, 0, len(v))
				for k := range v {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					p := path + "." + k
					if title, ok := v["title"].(string); ok && k == "targets" {
						p = path + "[" + title + "]"
					}
					walk(p, v[k])
				}
			case []any:
				for i, x := range v {
					walk(fmt.Sprintf("%s[%d]", path, i), x)
				}
			}
		}
		walk("", d)
	}
	var rules struct {
		Groups []struct {
			Name  string
			Rules []struct {
				Alert, Record, Expr string
				Annotations         map[string]string
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(monitoringDir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			// The annotations' $labels.X become legend-like references.
			var legend string
			for _, m := range regexp.MustCompile(`\$labels\.(\w+)`).FindAllStringSubmatch(r.Annotations["summary"]+r.Annotations["description"], -1) {
				legend += "{{" + m[1] + "}}"
			}
			out = append(out, monitoringExpr{"alerts.yml " + g.Name + "/" + r.Alert + r.Record, r.Expr, legend})
		}
	}
	return out
}

var (
	metricRef   = regexp.MustCompile(`\b((?:content_cache|kubelet)_[a-z0-9_]+)\b(\s*\{[^}]*\})?`)
	matcherRef  = regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	groupingRef = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	legendRef   = regexp.MustCompile(`\{\{\s*\.?(\w+)\s*\}\}`)
	plainValues = regexp.MustCompile(`^[A-Za-z0-9_.:-]+(\|[A-Za-z0-9_.:-]+)*$`)
)

// checkExpr returns what expr (and its legend) names that got does not
// have: a content_cache_* metric, a label of a metric, a label value of
// an = or =~ matcher (when the value is a plain list of alternatives), a
// grouping label no metric of the expression has, a legend label.
func checkExpr(got series, expr, legend string) []error {
	var errs []error
	labelsOf := map[string]bool{} // labels of every metric in expr
	for _, l := range targetLabels {
		labelsOf[l] = true
	}
	for _, m := range metricRef.FindAllStringSubmatch(expr, -1) {
		name, selector := m[1], m[2]
		labels, ok := got[name]
		if !ok {
			if ext, isExt := externalMetrics[name]; isExt {
				labels = map[string]map[string]bool{}
				for _, l := range ext {
					labels[l] = nil // any value
				}
			} else {
				errs = append(errs, fmt.Errorf("metric %s does not exist", name))
				continue
			}
		}
		for l := range labels {
			labelsOf[l] = true
		}
		for _, mm := range matcherRef.FindAllStringSubmatch(selector, -1) {
			label, op, value := mm[1], mm[2], mm[3]
			if slices.Contains(targetLabels, label) {
				continue
			}
			values, ok := labels[label]
			if !ok {
				errs = append(errs, fmt.Errorf("metric %s has no label %q", name, label))
				continue
			}
			if values == nil || (op != "=" && op != "=~") || strings.Contains(value, "$") || !plainValues.MatchString(value) {
				continue
			}
			for _, v := range strings.Split(value, "|") {
				if !values[v] {
					errs = append(errs, fmt.Errorf("metric %s: label %s has no value %q (seen: %s)", name, label, v, keysOf(values)))
				}
			}
		}
	}
	for _, g := range groupingRef.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !labelsOf[l] {
				errs = append(errs, fmt.Errorf("grouping label %q is on none of the expression's metrics", l))
			}
		}
	}
	for _, m := range legendRef.FindAllStringSubmatch(legend, -1) {
		if !labelsOf[m[1]] {
			errs = append(errs, fmt.Errorf("legend label %q is on none of the expression's metrics", m[1]))
		}
	}
	return errs
}

func keysOf(m map[string]bool) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// scrapeRunning starts an origin and a cache, makes traffic, and returns
// the content_cache_* series of both /metrics.
func scrapeRunning(t *testing.T) series {
	t.Helper()
	htpasswd := writeHtpasswd(t)
	originAddr, cacheAddr := freeAddr(t), freeAddr(t)
	originDebug, cacheDebug := freeAddr(t), freeAddr(t)

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "origin-ed25519.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	debug := func(addr string) string {
		return fmt.Sprintf("  debug:\n    addr: %s\n    prometheus:\n      enabled: true\n      path: /metrics\n", addr)
	}
	originCfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: %s
http:
  addr: %s
%sauth:
  htpasswd:
    realm: origin
    path: %s
middleware:
  registry:
    - name: contentcaches
      options:
        signingkey: %s
        probeinterval: 200ms
        caches:
          - name: region-a
            host: http://%s
        users:
          %s: region-a
`, t.TempDir(), originAddr, debug(originDebug), htpasswd, keyFile, cacheAddr, testUser)
	cacheCfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  delete:
    enabled: true
  filesystem:
    rootdirectory: %s
http:
  addr: %s
%smiddleware:
  registry:
    - name: downstream
      options:
        blobttl: 1h
        upstreams:
          - http://%s
`, t.TempDir(), cacheAddr, debug(cacheDebug), originAddr)
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	origin := start(t, "origin", childEnv(), "serve", write("origin.yml", originCfg))
	cache := start(t, "cache", childEnv(), "serve", write("cache.yml", cacheCfg))
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	waitReady(t, origin, client, "http://"+originAddr)
	waitReady(t, cache, client, "http://"+cacheAddr)

	img := regtest.RandomImage(26, 2, 4096)
	img.Repo, img.Tag = "team/app", "v1"
	if err := regtest.Push(t.Context(), "http://"+originAddr, testUser, testPass, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	get := func(base, path, user, pass string, want int) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.SetBasicAuth(user, pass)
		req.Header.Set("Accept", img.MediaType)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s%s: %v", base, path, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s%s as %s: %d, want %d", base, path, user, resp.StatusCode, want)
		}
	}
	blobs := []string{}
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		blobs = append(blobs, "/v2/"+img.Repo+"/blobs/"+digest.FromBytes(b).String())
	}
	cacheURL := "http://" + cacheAddr
	for range 2 { // a miss, then a hit
		get(cacheURL, "/v2/"+img.Repo+"/manifests/"+img.Tag, testUser, testPass, http.StatusOK)
		for _, p := range blobs {
			get(cacheURL, p, testUser, testPass, http.StatusOK)
		}
	}
	get(cacheURL, blobs[0], testUser, "wrong", http.StatusUnauthorized)

	// The origin redirects alice's blob GETs once it has seen the cache up.
	waitMetric(t, "http://"+originDebug+"/metrics", `content_cache_origin_cache_up{cache="region-a"} 1`)
	get("http://"+originAddr, blobs[1], testUser, testPass, http.StatusTemporaryRedirect)

	got := series{}
	for _, base := range []string{"http://" + cacheDebug, "http://" + originDebug} {
		for name, fam := range scrape(t, base+"/metrics") {
			if !strings.HasPrefix(name, "content_cache_") {
				continue
			}
			addFamily(got, fam)
		}
	}
	return got
}

// waitMetric polls a /metrics page until a line starts with line.
func waitMetric(t *testing.T, url, line string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, line) {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no line %q within 30s", url, line)
		case <-tick.C:
		}
	}
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	return fams
}

// addFamily records a family's series under the names PromQL sees: a
// histogram as _bucket (with le), _sum and _count.
func addFamily(got series, fam *dto.MetricFamily) {
	add := func(name string, pairs []*dto.LabelPair, extra ...string) {
		if got[name] == nil {
			got[name] = map[string]map[string]bool{}
		}
		for _, p := range pairs {
			if got[name][p.GetName()] == nil {
				got[name][p.GetName()] = map[string]bool{}
			}
			got[name][p.GetName()][p.GetValue()] = true
		}
		for _, l := range extra {
			if got[name][l] == nil {
				got[name][l] = map[string]bool{}
			}
		}
	}
	for _, m := range fam.GetMetric() {
		switch fam.GetType() {
		case dto.MetricType_HISTOGRAM:
			add(fam.GetName()+"_bucket", m.GetLabel(), "le")
			got[fam.GetName()+"_bucket"]["le"] = nil // any value
			add(fam.GetName()+"_sum", m.GetLabel())
			add(fam.GetName()+"_count", m.GetLabel())
		default:
			add(fam.GetName(), m.GetLabel())
		}
	}
	if len(fam.GetMetric()) == 0 {
		add(fam.GetName(), nil)
	}
}
