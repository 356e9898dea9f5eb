package registry_test

import (
	"crypto/tls"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTracingOffByDefault runs the same registry twice: as an operator
// starts it (no OpenTelemetry variable), and with an OTLP endpoint where
// nothing listens. Both export every 20 ms (OTEL_BSP_SCHEDULE_DELAY only
// tunes, it does not turn tracing on). Once the second has logged its
// export errors three times, the first must not have logged any error.
func TestTracingOffByDefault(t *testing.T) {
	f := &fixture{pki: newPKI(t), htpasswd: writeHtpasswd(t)}
	env := func(extra ...string) []string {
		var out []string
		for _, kv := range childEnv() {
			if !strings.HasPrefix(kv, "OTEL_") {
				out = append(out, kv)
			}
		}
		return append(out, append(extra, "OTEL_BSP_SCHEDULE_DELAY=20")...)
	}
	quiet := f.startConfigEnv(t, filepath.Join(configsDir, "origin.yml"), env())
	traced := f.startConfigEnv(t, filepath.Join(configsDir, "origin.yml"),
		env("OTEL_EXPORTER_OTLP_ENDPOINT=http://"+freeAddr(t)))

	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for strings.Count(traced.proc.stderr.String(), "traces export") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the registry with an OTLP endpoint logged no export error within 30s; stderr:\n%s", traced.proc.stderr.String())
		}
		// Requests make spans for both to export.
		quiet.ping(t, testUser, testPass)
		traced.ping(t, testUser, testPass)
		<-tick.C
	}
	for _, out := range []string{quiet.proc.stdout.String(), quiet.proc.stderr.String()} {
		for line := range strings.Lines(out) {
			if strings.Contains(line, "level=error") || strings.Contains(line, "traces export") {
				t.Errorf("default run logged: %s", line)
			}
		}
	}
}

// startConfigEnv is startConfig with the process environment env.
func (f *fixture) startConfigEnv(t *testing.T, src string, env []string) instance {
	t.Helper()
	path, base := f.rewrite(t, src)
	p := start(t, filepath.Base(src), env, "serve", path)
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:           nil,
			TLSClientConfig: &tls.Config{RootCAs: f.pki.pool, MinVersion: tls.VersionTLS12},
		},
	}
	t.Cleanup(client.CloseIdleConnections)
	waitReady(t, p, client, base)
	return instance{proc: p, base: base, client: client}
}
