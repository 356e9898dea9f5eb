package check

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// chart is the Helm chart, relative to this module.
var chart = filepath.Join(repoRoot, "deploy", "helm", "content-cache")

// kinds maps each apiVersion/kind the chart may render to its Go type.
// Anything else fails the test: a new kind must be added here, so that it
// is decoded strictly too.
var kinds = map[string]reflect.Type{
	"apps/v1/StatefulSet":                     reflect.TypeFor[appsv1.StatefulSet](),
	"apps/v1/Deployment":                      reflect.TypeFor[appsv1.Deployment](),
	"apps/v1/DaemonSet":                       reflect.TypeFor[appsv1.DaemonSet](),
	"v1/Service":                              reflect.TypeFor[corev1.Service](),
	"v1/ConfigMap":                            reflect.TypeFor[corev1.ConfigMap](),
	"v1/Secret":                               reflect.TypeFor[corev1.Secret](),
	"v1/ServiceAccount":                       reflect.TypeFor[corev1.ServiceAccount](),
	"policy/v1/PodDisruptionBudget":           reflect.TypeFor[policyv1.PodDisruptionBudget](),
	"monitoring.coreos.com/v1/ServiceMonitor": reflect.TypeFor[monitoringv1.ServiceMonitor](),
}

// helmBin is helm from PATH (`make tools` installs the pinned one into
// .tools/bin, and `make test` puts that on PATH); the test skips without
// it unless CI is set.
func helmBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("helm")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("helm not found on PATH (CI is set, so not skipping): %v", err)
		}
		t.Skipf("helm not found on PATH; run `make tools` and put .tools/bin on PATH (`make test` does both): %v", err)
	}
	return p
}

func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	// No repositories, plugins or caches of the host.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

// examples are the values files of the chart's examples/, and "" for the
// chart's defaults.
func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chart, "examples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values examples: %v", err)
	}
	return append([]string{""}, files...)
}

// rendered is one object of `helm template`'s output.
type rendered struct {
	source string // the template, from helm's "# Source:" line
	kind   string // apiVersion/kind
	obj    any    // decoded into the kind's Go type
	raw    []byte // JSON
}

// render runs helm template with a values file and decodes every object
// strictly into its k8s.io/api type: a field the type does not have fails.
func render(t *testing.T, values string, set ...string) ([]rendered, error) {
	t.Helper()
	args := []string{"template", "cache", chart, "--namespace", "cache-system"}
	if values != "" {
		args = append(args, "--values", values)
	}
	for _, s := range set {
		args = append(args, "--set", s)
	}
	out, err := helm(t, args...)
	if err != nil {
		return nil, err
	}
	var objs []rendered
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(out), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		source := ""
		if m := regexp.MustCompile(`(?m)^# Source: (.*)$`).FindStringSubmatch(doc); m != nil {
			source = m[1]
		}
		raw, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s: not YAML: %v", source, err)
		}
		var meta struct{ APIVersion, Kind string }
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("%s: %v", source, err)
		}
		kind := meta.APIVersion + "/" + meta.Kind
		typ, ok := kinds[kind]
		if !ok {
			return nil, fmt.Errorf("%s: kind %s is not one the test knows", source, kind)
		}
		obj := reflect.New(typ).Interface()
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			return nil, fmt.Errorf("%s (%s): strict decoding: %v", source, kind, err)
		}
		objs = append(objs, rendered{source: source, kind: kind, obj: obj, raw: raw})
	}
	return objs, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestHelmLint runs helm lint (strict) with the defaults and each example.
func TestHelmLint(t *testing.T) {
	for _, v := range examples(t) {
		args := []string{"lint", "--strict", chart}
		if v != "" {
			args = append(args, "--values", v)
		}
		if out, err := helm(t, args...); err != nil {
			t.Errorf("%v", err)
		} else {
			t.Logf("helm lint %s: %s", filepath.Base(v), lastLine(out))
		}
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// TestHelmTemplate renders the chart with each values example, decodes
// every object strictly, and checks what each mode must have.
func TestHelmTemplate(t *testing.T) {
	for _, v := range examples(t) {
		name := filepath.Base(v)
		if v == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			objs, err := render(t, v)
			if err != nil {
				t.Fatal(err)
			}
			var kindsSeen []string
			for _, o := range objs {
				kindsSeen = append(kindsSeen, o.kind)
			}
			t.Logf("%d objects: %v", len(objs), kindsSeen)
			values := readValues(t, v)
			checkPods(t, objs, values)
			switch values.Mode {
			case "", "single":
				wantKinds(t, kindsSeen, "apps/v1/StatefulSet", "v1/Service", "v1/ConfigMap")
			case "replicated":
				wantKinds(t, kindsSeen, "apps/v1/StatefulSet", "policy/v1/PodDisruptionBudget", "v1/Service")
				checkReplicated(t, objs, values)
			case "nodelocal":
				wantKinds(t, kindsSeen, "apps/v1/DaemonSet", "v1/ConfigMap")
				checkNodeLocal(t, objs, values)
			}
			if values.ServiceMonitor.Enabled {
				wantKinds(t, kindsSeen, "monitoring.coreos.com/v1/ServiceMonitor")
			}
		})
	}
}

// TestHelmRefusesBadValues checks the chart's own checks and the strict
// decoding bite: values that would make a broken release fail to render,
// and a field Kubernetes does not know fails the decoding.
func TestHelmRefusesBadValues(t *testing.T) {
	for _, c := range []struct {
		set  []string
		want string
	}{
		{[]string{"mode=cluster"}, `mode: found "cluster"`},
		{[]string{"mode=replicated"}, "storage.object: required in mode replicated"},
		{[]string{"mode=replicated", "storage.object.s3.bucket=b"}, "mode replicated needs redis.addr or redis.bundled.enabled"},
		{[]string{"cache.upstreams=null"}, "cache.upstreams: required"},
	} {
		_, err := render(t, "", c.set...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--set %v: err = %v, want %q", c.set, err, c.want)
		}
	}
	// A field no pod spec has, through a value the chart passes verbatim.
	_, err := render(t, "", "securityContext.runAsUsr=1000")
	if err == nil || !strings.Contains(err.Error(), "runAsUsr") {
		t.Errorf("an unknown securityContext field rendered and decoded: err = %v, want a strict decoding error naming it", err)
	}
}

func wantKinds(t *testing.T, seen []string, want ...string) {
	t.Helper()
	for _, k := range want {
		if !slices.Contains(seen, k) {
			t.Errorf("no %s rendered (got %v)", k, seen)
		}
	}
}

// chartValues is what the checks read of a values file.
type chartValues struct {
	Mode           string
	Replicas       int
	ServiceMonitor struct{ Enabled bool }
	TLS            struct{ SecretName string }
	Redis          struct {
		Addr           string
		PasswordSecret string
		TLSCASecret    string
		Bundled        struct{ Enabled bool }
	}
	NodeLocal struct {
		HostNetwork      *bool
		Registries       []string
		InstallHostsToml struct{ Enabled bool }
	}
}

func readValues(t *testing.T, file string) chartValues {
	t.Helper()
	var v chartValues
	for _, f := range []string{filepath.Join(chart, "values.yaml"), file} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	return v
}

// podSpecs returns the pod template of every workload, by kind.
func podSpecs(objs []rendered) map[string]corev1.PodTemplateSpec {
	pods := map[string]corev1.PodTemplateSpec{}
	for _, o := range objs {
		switch w := o.obj.(type) {
		case *appsv1.StatefulSet:
			pods["StatefulSet/"+w.Name] = w.Spec.Template
		case *appsv1.Deployment:
			pods["Deployment/"+w.Name] = w.Spec.Template
		case *appsv1.DaemonSet:
			pods["DaemonSet/"+w.Name] = w.Spec.Template
		}
	}
	return pods
}

// checkPods checks the cache's pods run as non-root on a read-only root
// filesystem, with probes, resources, and the config from the ConfigMap,
// and that the ConfigMap's config.yml has the downstream block.
func checkPods(t *testing.T, objs []rendered, v chartValues) {
	t.Helper()
	found := false
	for name, p := range podSpecs(objs) {
		for _, c := range p.Spec.Containers {
			if c.Name != "content-cache" {
				continue
			}
			found = true
			sc, psc := c.SecurityContext, p.Spec.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
				t.Errorf("%s: pod securityContext %+v, want runAsNonRoot and a non-zero runAsUser", name, psc)
			}
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: container securityContext %+v, want readOnlyRootFilesystem", name, sc)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.LivenessProbe == nil {
				t.Errorf("%s: readiness %+v liveness %+v, want an HTTP readiness probe and a liveness probe", name, c.ReadinessProbe, c.LivenessProbe)
			} else if want := map[bool]corev1.URIScheme{true: "HTTPS", false: "HTTP"}[v.TLS.SecretName != ""]; c.ReadinessProbe.HTTPGet.Scheme != want {
				t.Errorf("%s: readiness probe scheme %s, want %s", name, c.ReadinessProbe.HTTPGet.Scheme, want)
			}
			if len(c.Resources.Requests) == 0 {
				t.Errorf("%s: no resource requests", name)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}
			for _, path := range []string{"/etc/content-cache/conf", "/var/lib/registry", "/tmp"} {
				if mounts[path] == "" {
					t.Errorf("%s: nothing mounted at %s (read-only root filesystem)", name, path)
				}
			}
			if v.TLS.SecretName != "" && mounts["/etc/content-cache/tls"] == "" {
				t.Errorf("%s: TLS secret %s not mounted", name, v.TLS.SecretName)
			}
		}
	}
	if !found {
		t.Fatalf("no content-cache container rendered")
	}
	cfg := configYAML(t, objs)
	var c struct {
		HTTP struct {
			Addr string
			TLS  struct{ Certificate, Key string }
		}
		Storage    map[string]any
		Middleware struct {
			Registry []struct {
				Name    string
				Options map[string]any
			}
		}
	}
	if err := yaml.Unmarshal([]byte(cfg), &c); err != nil {
		t.Fatalf("config.yml: %v\n%s", err, cfg)
	}
	if len(c.Middleware.Registry) != 1 || c.Middleware.Registry[0].Name != "downstream" || c.Middleware.Registry[0].Options["upstreams"] == nil {
		t.Errorf("config.yml: middleware %+v, want one downstream block with upstreams", c.Middleware.Registry)
	}
	if (v.TLS.SecretName != "") != (c.HTTP.TLS.Certificate != "") {
		t.Errorf("config.yml: http.tls %+v with tls.secretName %q", c.HTTP.TLS, v.TLS.SecretName)
	}
	if d, _ := c.Storage["delete"].(map[string]any); d["enabled"] != true {
		t.Errorf("config.yml: storage.delete %v, want enabled (blobttl needs it)", c.Storage["delete"])
	}
}

// configYAML is config.yml of the chart's ConfigMap (the first replica's
// in mode replicated).
func configYAML(t *testing.T, objs []rendered) string {
	t.Helper()
	cfgs := configs(objs)
	if len(cfgs) == 0 {
		t.Fatal("no ConfigMap with a config")
	}
	keys := make([]string, 0, len(cfgs))
	for k := range cfgs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return cfgs[keys[0]]
}

// configs are the cache's configuration files in the chart's ConfigMap:
// config.yml, or one <pod name>.yml per replica.
func configs(objs []rendered) map[string]string {
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok && !strings.HasSuffix(cm.Name, "-hosts-toml") {
			out := map[string]string{}
			for k, v := range cm.Data {
				if strings.HasSuffix(k, ".yml") {
					out[k] = v
				}
			}
			return out
		}
	}
	return nil
}

// checkReplicated checks N replicas, Redis in config.yml (the option keys
// addr, passwordfile, db, keyprefix, tls.ca), the shared http.secret from
// a Secret, anti-affinity, and the bundled Redis when asked for.
func checkReplicated(t *testing.T, objs []rendered, v chartValues) {
	t.Helper()
	for _, o := range objs {
		d, ok := o.obj.(*appsv1.StatefulSet)
		if !ok || d.Spec.Template.Labels["app.kubernetes.io/component"] != "cache" {
			continue
		}
		if args := d.Spec.Template.Spec.Containers[0].Args; len(args) != 1 || args[0] != "/etc/content-cache/conf/$(POD_NAME).yml" {
			t.Errorf("args %q, want each replica's own config, /etc/content-cache/conf/$(POD_NAME).yml", args)
		}
		// Each replica's config.yml advertises its own stable name.
		cfgs := configs(objs)
		if len(cfgs) != v.Replicas {
			t.Errorf("%d configs in the ConfigMap, want one per replica (%d)", len(cfgs), v.Replicas)
		}
		for i := range v.Replicas {
			pod := fmt.Sprintf("%s-%d", d.Name, i)
			want := fmt.Sprintf("advertise: %s://%s.%s.cache-system.svc:5000", map[bool]string{true: "https", false: "http"}[v.TLS.SecretName != ""], pod, d.Spec.ServiceName)
			if !strings.Contains(cfgs[pod+".yml"], want) {
				t.Errorf("%s.yml: no %q:\n%s", pod, want, cfgs[pod+".yml"])
			}
		}
		if d.Spec.Replicas == nil || int(*d.Spec.Replicas) != v.Replicas {
			t.Errorf("replicas %v, want %d", d.Spec.Replicas, v.Replicas)
		}
		if a := d.Spec.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
			t.Errorf("no pod anti-affinity")
		}
		var secret bool
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			secret = secret || (e.Name == "REGISTRY_HTTP_SECRET" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
		}
		if !secret {
			t.Errorf("no REGISTRY_HTTP_SECRET from a Secret: replicas would not share http.secret")
		}
	}
	var c struct {
		Middleware struct {
			Registry []struct {
				Options struct {
					Redis map[string]any
				}
			}
		}
	}
	if err := yaml.Unmarshal([]byte(configYAML(t, objs)), &c); err != nil || len(c.Middleware.Registry) == 0 {
		t.Fatalf("config.yml: %v", err)
	}
	r := c.Middleware.Registry[0].Options.Redis
	want := v.Redis.Addr
	if v.Redis.Bundled.Enabled {
		want = "cache-content-cache-redis:6379"
		bundled := false
		for _, o := range objs {
			if d, ok := o.obj.(*appsv1.Deployment); ok && d.Name == "cache-content-cache-redis" {
				bundled = true
			}
		}
		if !bundled {
			t.Errorf("redis.bundled.enabled but no Redis Deployment")
		}
	}
	if r["addr"] != want {
		t.Errorf("config.yml: redis %v, want addr %s", r, want)
	}
	for _, k := range []string{"db", "keyprefix"} {
		if _, ok := r[k]; !ok {
			t.Errorf("config.yml: redis %v has no %s", r, k)
		}
	}
	if (v.Redis.PasswordSecret != "") != (r["passwordfile"] != nil) {
		t.Errorf("config.yml: redis %v with passwordSecret %q", r, v.Redis.PasswordSecret)
	}
	if tls, _ := r["tls"].(map[string]any); (v.Redis.TLSCASecret != "") != (tls["ca"] != nil) {
		t.Errorf("config.yml: redis %v with tlsCASecret %q", r, v.Redis.TLSCASecret)
	}
}

// checkNodeLocal checks the DaemonSet's host network or host port, and a
// hosts.toml per registry that sends pulls and resolves to the local cache.
func checkNodeLocal(t *testing.T, objs []rendered, v chartValues) {
	t.Helper()
	hostNetwork := v.NodeLocal.HostNetwork == nil || *v.NodeLocal.HostNetwork
	for _, o := range objs {
		ds, ok := o.obj.(*appsv1.DaemonSet)
		if !ok {
			continue
		}
		spec := ds.Spec.Template.Spec
		if spec.HostNetwork != hostNetwork {
			t.Errorf("hostNetwork %v, want %v", spec.HostNetwork, hostNetwork)
		}
		if !hostNetwork && spec.Containers[0].Ports[0].HostPort == 0 {
			t.Errorf("neither hostNetwork nor a hostPort")
		}
		if v.NodeLocal.InstallHostsToml.Enabled && len(spec.InitContainers) == 0 {
			t.Errorf("installHostsToml.enabled but no init container")
		}
	}
	var toml []string
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok && strings.HasSuffix(cm.Name, "-hosts-toml") {
			for _, d := range cm.Data {
				toml = append(toml, d)
			}
		}
	}
	if len(toml) != len(v.NodeLocal.Registries) {
		t.Fatalf("%d hosts.toml, want one per registry %v", len(toml), v.NodeLocal.Registries)
	}
	for _, reg := range v.NodeLocal.Registries {
		i := slices.IndexFunc(toml, func(s string) bool { return strings.Contains(s, `server = "https://`+reg+`"`) })
		if i < 0 {
			t.Errorf("no hosts.toml for %s", reg)
			continue
		}
		if !strings.Contains(toml[i], `[host."http://127.0.0.1:`) || !strings.Contains(toml[i], `capabilities = ["pull", "resolve"]`) {
			t.Errorf("hosts.toml for %s does not send pulls to the node's cache:\n%s", reg, toml[i])
		}
	}
}
