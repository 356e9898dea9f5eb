package downstream_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
	"github.com/content-cache/content-cache/internal/warmauth"
)

// dockerConfig writes a Docker config file with user's credentials for
// host, as docker login does.
func dockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	}})
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// warmCache starts a cache of origin with extra options, warming through
// oras' client (as the binary does), on clock, its schedule run by hand.
func warmCache(t *testing.T, origin string, clock *regtest.Clock, extra map[string]any) *regtest.Server {
	t.Helper()
	if extra == nil {
		extra = map[string]any{}
	}
	downstream.SetOptions(extra, downstream.Options{Now: clock.Now, ManualWarm: true, ManualSweep: true, WarmClient: warmauth.New})
	return regtest.StartCache(t, origin, extra)
}

// labeled is the value of a metric's series with label=value.
func labeled(t *testing.T, s *regtest.Server, name, label, value string) float64 {
	t.Helper()
	mfs, err := s.Cache.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{%s=%q}", name, label, value)
	return 0
}

// originBlobGets counts the origin's blob GETs, by path.
func originBlobGets(s *regtest.Server) map[string]int {
	out := map[string]int{}
	for k, n := range s.Counts.Snapshot() {
		if strings.HasPrefix(k, "GET ") && strings.Contains(k, "/blobs/") {
			out[k] = n
		}
	}
	return out
}

// TestWarmSchedule: the warm option's run pulls its images into storage
// through the cache (each blob fetched once from the origin), updates the
// metrics, and a later run fetches none of the stored blobs again; a run
// within the interval of the last one is skipped.
func TestWarmSchedule(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}))
	img := regtest.RandomImage(2510, 3, 64<<10)
	img.Repo, img.Tag = "base/app", "1.4"
	if err := regtest.Push(t.Context(), origin.URL, "alice", "alice-pw", img); err != nil {
		t.Fatal(err)
	}
	clock := &regtest.Clock{}
	s := warmCache(t, origin.URL, clock, map[string]any{"warm": map[string]any{
		"images":      []any{origin.Host + "/base/app:1.4"},
		"interval":    "1h",
		"credentials": dockerConfig(t, origin.Host, "alice", "alice-pw"),
	}})
	var total int64
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		total += int64(len(b))
	}

	res, err := s.Cache.WarmNow(t.Context())
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("first run: %v, %+v", err, res)
	}
	if r := res[0]; r.Digest != img.Digest || r.Blobs != 4 || r.Fetched != 4 || r.Present != 0 || r.Bytes != total {
		t.Fatalf("first run: %+v; want digest %s, 4 blobs fetched, %d bytes", r, img.Digest, total)
	}
	first := originBlobGets(origin)
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		if n := first["GET /v2/base/app/blobs/"+digest.FromBytes(b).String()]; n != 1 {
			t.Errorf("blob %s fetched %d times from the origin, want 1", digest.FromBytes(b), n)
		}
	}
	if got := labeled(t, s, "content_cache_warm_runs_total", "result", "ok"); got != 1 {
		t.Errorf("warm_runs_total{ok} = %v, want 1", got)
	}
	if got := labeled(t, s, "content_cache_warm_images_total", "result", "warmed"); got != 1 {
		t.Errorf("warm_images_total{warmed} = %v, want 1", got)
	}
	if got := metricValue(t, s, "content_cache_warm_bytes_total"); got != float64(total) {
		t.Errorf("warm_bytes_total = %v, want %d", got, total)
	}
	if got, want := metricValue(t, s, "content_cache_warm_last_success_timestamp_seconds"), float64(clock.Now().Unix()); got != want {
		t.Errorf("warm_last_success = %v, want %v", got, want)
	}

	// Within the interval: skipped (one run per interval, whichever
	// replica's timer fires first).
	if _, err := s.Cache.WarmNow(t.Context()); !errors.Is(err, downstream.ErrWarmSkipped) {
		t.Fatalf("a run within the interval: %v, want ErrWarmSkipped", err)
	}
	if got := labeled(t, s, "content_cache_warm_runs_total", "result", "skipped"); got != 1 {
		t.Errorf("warm_runs_total{skipped} = %v, want 1", got)
	}

	// The next interval: everything is stored; nothing is fetched again.
	clock.Advance(time.Hour)
	res, err = s.Cache.WarmNow(t.Context())
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("second run: %v, %+v", err, res)
	}
	if r := res[0]; r.Fetched != 0 || r.Present != 4 || r.Bytes != 0 {
		t.Errorf("second run: %+v; want 4 blobs present, none fetched", r)
	}
	for k, n := range originBlobGets(origin) {
		if n != first[k] {
			t.Errorf("second run: origin %s %d times, was %d: a stored blob was fetched again", k, n, first[k])
		}
	}
	if got := labeled(t, s, "content_cache_warm_runs_total", "result", "ok"); got != 2 {
		t.Errorf("warm_runs_total{ok} = %v, want 2", got)
	}
	if got := metricValue(t, s, "content_cache_warm_bytes_total"); got != float64(total) {
		t.Errorf("warm_bytes_total = %v after a run that fetched nothing, want %d", got, total)
	}
	if got, want := metricValue(t, s, "content_cache_warm_last_success_timestamp_seconds"), float64(clock.Now().Unix()); got != want {
		t.Errorf("warm_last_success = %v, want %v", got, want)
	}

	// What warming stored is a user's hit: alice's pull asks the origin
	// for no blob.
	fillsDone(t, s)
	for _, b := range img.Layers {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/v2/base/app/blobs/"+digest.FromBytes(b).String(), nil)
		req.SetBasicAuth("alice", "alice-pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("alice's pull of a warmed blob: %s", resp.Status)
		}
	}
	for k, n := range originBlobGets(origin) {
		if n != first[k] {
			t.Errorf("a user's pull after warming: origin %s %d times, was %d", k, n, first[k])
		}
	}

	// A failing image counts as failed, the run too.
	clock.Advance(time.Hour)
	bad := warmCache(t, origin.URL, clock, map[string]any{"warm": map[string]any{
		"images":      []any{"base/app:1.4", "base/missing:1"},
		"credentials": dockerConfig(t, origin.Host, "alice", "alice-pw"),
	}})
	res, err = bad.Cache.WarmNow(t.Context())
	if err != nil || len(res) != 2 || res[0].Err != nil || res[1].Err == nil || !strings.Contains(res[1].Err.Error(), "404") {
		t.Fatalf("a run with a missing image: %v, %+v", err, res)
	}
	if got := labeled(t, bad, "content_cache_warm_runs_total", "result", "failed"); got != 1 {
		t.Errorf("warm_runs_total{failed} = %v, want 1", got)
	}
	if got := labeled(t, bad, "content_cache_warm_images_total", "result", "failed"); got != 1 {
		t.Errorf("warm_images_total{failed} = %v, want 1", got)
	}
	if got := metricValue(t, bad, "content_cache_warm_last_success_timestamp_seconds"); got != 0 {
		t.Errorf("warm_last_success = %v after a failed run, want 0", got)
	}
}

// TestWarmIndexPlatforms: every platform of an index is warmed, or only
// the one asked for; the other's config is never fetched.
func TestWarmIndexPlatforms(t *testing.T) {
	origin := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}))
	amd := regtest.RandomImage(2520, 2, 32<<10)
	amd.Repo, amd.Tag = "base/multi", "amd64"
	arm := regtest.WithPlatform(amd, "linux", "arm64")
	arm.Tag = "arm64"
	for _, img := range []regtest.Image{amd, arm} {
		if err := regtest.Push(t.Context(), origin.URL, "alice", "alice-pw", img); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := regtest.PushIndex(t.Context(), origin.URL, "alice", "alice-pw", "base/multi", "1", []regtest.Image{amd, arm})
	if err != nil {
		t.Fatal(err)
	}
	creds := dockerConfig(t, origin.Host, "alice", "alice-pw")
	gets := func(b []byte) int {
		return origin.Counts.Get("GET", "/v2/base/multi/blobs/"+digest.FromBytes(b).String())
	}

	s := warmCache(t, origin.URL, &regtest.Clock{}, nil)
	res, err := s.Cache.Warm(t.Context(), []string{"base/multi:1"}, downstream.WarmOptions{CredentialsFile: creds, Platform: "linux/arm64"})
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("warm linux/arm64: %v, %+v", err, res)
	}
	if r := res[0]; r.Digest != idx || r.Manifests != 2 || r.Blobs != 3 || r.Fetched != 3 {
		t.Errorf("warm linux/arm64: %+v; want the index, one image manifest, its config and 2 layers", r)
	}
	if gets(arm.Config) != 1 || gets(amd.Config) != 0 {
		t.Errorf("configs fetched: arm64 %d, amd64 %d; want 1 and 0", gets(arm.Config), gets(amd.Config))
	}

	res, err = s.Cache.Warm(t.Context(), []string{"base/multi:1"}, downstream.WarmOptions{CredentialsFile: creds})
	if err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("warm every platform: %v, %+v", err, res)
	}
	if r := res[0]; r.Manifests != 3 || r.Blobs != 4 || r.Fetched != 1 || r.Present != 3 {
		t.Errorf("warm every platform: %+v; want 3 manifests, 4 blobs of which only the amd64 config fetched", r)
	}
	if gets(amd.Config) != 1 || gets(amd.Layers[0]) != 1 {
		t.Errorf("after warming every platform: amd64 config %d, shared layer %d GETs; want 1 each", gets(amd.Config), gets(amd.Layers[0]))
	}

	res, _ = s.Cache.Warm(t.Context(), []string{"base/multi:1"}, downstream.WarmOptions{CredentialsFile: creds, Platform: "windows/amd64"})
	if len(res) != 1 || res[0].Err == nil || res[0].Err.Error() != "no manifest for platform windows/amd64 in the index" {
		t.Errorf("warm windows/amd64: %+v; want the error naming the platform", res)
	}
}

// TestWarmSizeBound: a run warms no more than the low watermark of
// maxsize (it would evict what it warmed); the image that would pass it
// fails, naming the bound, and none of its blobs is fetched.
func TestWarmSizeBound(t *testing.T) {
	origin := regtest.StartOrigin(t, nil)
	a := regtest.RandomImage(2530, 3, 64<<10)
	a.Repo, a.Tag = "base/a", "1"
	b := regtest.RandomImage(2531, 3, 64<<10)
	b.Repo, b.Tag = "base/b", "1"
	for _, img := range []regtest.Image{a, b} {
		if err := regtest.Push(t.Context(), origin.URL, "", "", img); err != nil {
			t.Fatal(err)
		}
	}
	// 300 KiB, low watermark 90%: a (about 193 KiB) fits, a and b do not.
	s := warmCache(t, origin.URL, &regtest.Clock{}, map[string]any{"maxsize": "300KiB"})
	res, err := s.Cache.Warm(t.Context(), []string{"base/a:1", "base/b:1"}, downstream.WarmOptions{Getenv: func(string) string { return "" }, CredentialsFile: dockerConfig(t, "unused.example", "x", "y")})
	if err != nil || len(res) != 2 {
		t.Fatalf("warm: %v, %+v", err, res)
	}
	if res[0].Err != nil || res[0].Fetched != 4 {
		t.Errorf("base/a: %+v; want warmed", res[0])
	}
	if res[1].Err == nil || !strings.HasPrefix(res[1].Err.Error(), "size bound: warming it would bring this run to ") || !strings.HasSuffix(res[1].Err.Error(), "past the low watermark of maxsize (276480 bytes); it would evict what this run warmed") {
		t.Errorf("base/b: %v; want the size bound's refusal", res[1].Err)
	}
	for _, l := range b.Layers {
		if n := origin.Counts.Get("GET", "/v2/base/b/blobs/"+digest.FromBytes(l).String()); n != 0 {
			t.Errorf("a layer of the refused image was fetched %d times", n)
		}
	}
	fillsDone(t, s)
	st, err := s.Cache.EnforceSize(t.Context())
	if err != nil || st.Removed != 0 || st.Stored > 300<<10 {
		t.Errorf("size bound after warming: %+v, %v; want nothing to evict, at most 300 KiB stored", st, err)
	}
}

// TestWarmTokenOrigin: warming through an origin with token auth (the
// client fetches a token from the origin's realm with the environment's
// credentials, through no flag or file), and through a registry of the
// registries option (the ns parameter).
func TestWarmTokenOrigin(t *testing.T) {
	ts := regtest.NewTokenServer(t, map[string]string{"alice": "alice-pw"}, func(user, repo string) []string {
		if user == "alice" {
			return []string{"*"}
		}
		return nil
	})
	origin := regtest.StartOrigin(t, ts.AuthConfig())
	other := regtest.StartOrigin(t, regtest.HtpasswdAuth(t, map[string]string{"alice": "alice-pw"}))
	img := regtest.RandomImage(2540, 2, 16<<10)
	img.Repo, img.Tag = "team/app", "2"
	for _, o := range []*regtest.Server{origin, other} {
		if err := regtest.Push(t.Context(), o.URL, "alice", "alice-pw", img); err != nil {
			t.Fatal(err)
		}
	}
	s := warmCache(t, origin.URL, &regtest.Clock{}, map[string]any{"registries": map[string]any{
		other.Host: map[string]any{"upstreams": []any{other.URL}},
	}})
	env := map[string]string{"CONTENT_CACHE_USERNAME": "alice", "CONTENT_CACHE_PASSWORD": "alice-pw"}
	tokensBefore := ts.Requests()
	res, err := s.Cache.Warm(t.Context(), []string{"team/app:2", other.Host + "/team/app:2"}, downstream.WarmOptions{
		Getenv: func(k string) string { return env[k] }, CredentialsFile: "",
	})
	if err != nil || len(res) != 2 || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("warm: %v, %+v", err, res)
	}
	if ts.Requests() == tokensBefore {
		t.Error("no token was fetched from the origin's realm")
	}
	if res[0].Fetched != 3 || res[1].Fetched != 0 || res[1].Present != 3 {
		t.Errorf("results %+v; want the default registry's image fetched, the other registry's found stored (same digests)", res)
	}
	// The other registry confirmed its repository has each blob (the
	// cache asks it before linking stored data there), and sent none.
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		if n := other.Counts.Get("GET", "/v2/team/app/blobs/"+digest.FromBytes(b).String()); n != 0 {
			t.Errorf("the other registry sent blob %s %d times", digest.FromBytes(b), n)
		}
	}
	if other.Counts.Get("GET", "/v2/team/app/manifests/2") == 0 {
		t.Error("the other registry was not asked for its tag: the ns parameter did not reach the cache")
	}
}

// TestWarmConfigErrors: each bad value of the warm option stops startup
// with one line naming it.
func TestWarmConfigErrors(t *testing.T) {
	dir := t.TempDir()
	notJSON := filepath.Join(dir, "config.json")
	if err := os.WriteFile(notJSON, []byte("alice:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := dockerConfig(t, "registry.example.com", "alice", "pw")
	for _, tc := range []struct {
		name string
		warm any
		want string
	}{
		{"not a mapping", "base/app:1.4",
			`downstream: option "warm": found string "base/app:1.4", expected a mapping {images: [IMAGE, ...], interval: 6h, credentials: /path/to/docker-config.json}`},
		{"unknown key", map[string]any{"images": []any{"base/app"}, "password": "x"},
			`downstream: option "warm": unknown key "password"; valid keys are credentials, images, interval`},
		{"no images", map[string]any{"interval": "6h"},
			`downstream: option "warm.images" is missing; expected a non-empty list of image references such as registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>`},
		{"empty images", map[string]any{"images": []any{}},
			`downstream: option "warm.images": found an empty list, expected a non-empty list of image references such as registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>`},
		{"malformed image", map[string]any{"images": []any{"Base/App:1.4"}},
			`downstream: option "warm.images": "Base/App:1.4" is not an image reference ("Base/App:1.4": repository name must be lowercase); expected an image reference such as registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>`},
		{"bad tag", map[string]any{"images": []any{"base/app:"}},
			`downstream: option "warm.images": "base/app:" is not an image reference ("base/app:": invalid reference format); expected an image reference such as registry.example.com/base/app:1.4, base/app:1.4 (the default registry) or base/app@sha256:<hex>`},
		{"registry not served", map[string]any{"images": []any{"ghcr.io/team/app:1"}},
			`downstream: option "warm.images": "ghcr.io/team/app:1" names registry ghcr.io, which this cache does not serve; expected the default registry's host (registry.example.com), or no host for the default registry`},
		{"interval too short", map[string]any{"images": []any{"base/app"}, "interval": "10s"},
			`downstream: option "warm.interval": found string "10s", expected a duration of at least 1m such as 6h (units s, m, h)`},
		{"interval in days", map[string]any{"images": []any{"base/app"}, "interval": "1d"},
			`downstream: option "warm.interval": found string "1d", expected a duration of at least 1m such as 6h (units s, m, h)`},
		{"inline credentials", map[string]any{"images": []any{"base/app"}, "credentials": map[string]any{"username": "alice", "password": "secret"}},
			`downstream: option "warm.credentials": found a mapping, expected the path of a Docker config file (config.json); credentials are never inline`},
		{"unreadable credentials", map[string]any{"images": []any{"base/app"}, "credentials": "/nonexistent/config.json"},
			`downstream: option "warm.credentials": cannot read "/nonexistent/config.json": no such file or directory; expected a readable Docker config file (config.json)`},
		{"credentials not a Docker config", map[string]any{"images": []any{"base/app"}, "credentials": notJSON},
			`downstream: option "warm.credentials": "` + notJSON + `" is not a Docker config file (not a JSON object); expected a file such as docker login writes, {"auths": {...}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := downstream.ParseOptions(map[string]any{"upstreams": []any{"https://registry.example.com"}, "warm": tc.warm})
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("the error quotes a credential: %v", err)
			}
		})
	}
	cfg, err := downstream.ParseOptions(map[string]any{"upstreams": []any{"https://registry.example.com"}, "warm": map[string]any{
		"images": []any{"registry.example.com:443/base/app:1.4", "base/tools"}, "credentials": good,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warm; w.Interval != 6*time.Hour || w.Credentials != good || len(w.Refs) != 2 || w.Refs[1].Tag != "latest" || w.Refs[0].Host != "registry.example.com:443" {
		t.Errorf("parsed %+v; want the default interval 6h, the credentials path, tag latest for a bare name", *w)
	}
}

// TestWarmReplicasOneAtATime: replicas sharing Redis warm once per
// interval between them: the second replica's run is skipped (the leases
// are Redis'), and it finds everything the first stored.
func TestWarmReplicasOneAtATime(t *testing.T) {
	redis := regtest.StartRedis(t)
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(2550, 2, 16<<10)
	img.Repo, img.Tag = "base/app", "1"
	if err := regtest.Push(t.Context(), origin.URL, "", "", img); err != nil {
		t.Fatal(err)
	}
	extra := map[string]any{"warm": map[string]any{"images": []any{"base/app:1"}, "interval": "1h",
		"credentials": dockerConfig(t, "unused.example", "x", "y")}}
	downstream.SetOptions(extra, downstream.Options{ManualWarm: true, WarmClient: warmauth.New})
	replicas := startReplicas(t, 2, origin.URL, redis, extra)

	res, err := replicas[0].Cache.WarmNow(t.Context())
	if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Fetched != 3 {
		t.Fatalf("replica 0: %v, %+v", err, res)
	}
	if _, err := replicas[1].Cache.WarmNow(t.Context()); !errors.Is(err, downstream.ErrWarmSkipped) {
		t.Fatalf("replica 1 in the same interval: %v, want ErrWarmSkipped", err)
	}
	if got := labeled(t, replicas[1], "content_cache_warm_runs_total", "result", "skipped"); got != 1 {
		t.Errorf("replica 1: warm_runs_total{skipped} = %v, want 1", got)
	}
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		if n := origin.Counts.Get("GET", "/v2/base/app/blobs/"+digest.FromBytes(b).String()); n != 1 {
			t.Errorf("blob %s fetched %d times, want 1", digest.FromBytes(b), n)
		}
	}
}

// TestWarmObjectStore: warming writes through the configured driver on an
// object store too (S3, versitygw); a stored blob's answer there is a
// redirect to the storage, which the warm client takes as stored without
// following it, and nothing is fetched twice.
func TestWarmObjectStore(t *testing.T) {
	st := regtest.StartS3(t)
	st.Redirect = true // distribution's default: hits answer 307 to the bucket
	origin := regtest.StartOrigin(t, nil)
	img := regtest.RandomImage(2560, 3, 32<<10)
	img.Repo, img.Tag = "base/app", "1"
	if err := regtest.Push(t.Context(), origin.URL, "", "", img); err != nil {
		t.Fatal(err)
	}
	extra := map[string]any{}
	downstream.SetOptions(extra, downstream.Options{ManualWarm: true, ManualSweep: true, WarmClient: warmauth.New})
	s := regtest.StartCacheOn(t, st, origin.URL, extra)
	opts := downstream.WarmOptions{CredentialsFile: dockerConfig(t, "unused.example", "x", "y")}
	res, err := s.Cache.Warm(t.Context(), []string{"base/app:1"}, opts)
	if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Fetched != 4 {
		t.Fatalf("first warm on S3: %v, %+v", err, res)
	}
	fillsDone(t, s)
	first := originBlobGets(origin)
	res, err = s.Cache.Warm(t.Context(), []string{"base/app:1"}, opts)
	if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Present != 4 || res[0].Fetched != 0 {
		t.Fatalf("second warm on S3: %v, %+v; want every blob found stored", err, res)
	}
	for k, n := range originBlobGets(origin) {
		if n != first[k] {
			t.Errorf("second warm on S3: origin %s %d times, was %d", k, n, first[k])
		}
	}
	// The data is in the bucket, where another cache or distribution
	// itself would find it.
	d := st.NewDriver(t)
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		if !dataExists(t, d, digest.FromBytes(b)) {
			t.Errorf("blob %s not in the bucket", digest.FromBytes(b))
		}
	}
}
