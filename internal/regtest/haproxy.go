package regtest

import (
	"context"
	"encoding/csv"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"
)

// LoadBalancer is haproxy (Debian's package) in front of a set of
// servers, round-robin, each health-checked on its readiness path. Its
// statistics page tells the test which servers haproxy sees up.
type LoadBalancer struct {
	Addr     string // 127.0.0.1:PORT, the front end
	URL      string // http://Addr
	StatsURL string // haproxy's statistics, CSV
	Proc     *Process
	// Servers are haproxy's names for the back ends, in the order given:
	// "r0", "r1", ...
	Servers []string
}

// LBOptions shape a LoadBalancer. The zero value is usable.
type LBOptions struct {
	// CheckPath is the readiness path haproxy probes with GET; a server is
	// up while it answers 200. Default: "/" (see the README's Health).
	CheckPath string
	// CheckInterval is the time between two probes of a server; one failed
	// probe takes it out, one good probe puts it back. Default: 200ms.
	CheckInterval time.Duration
	// TCP balances connections rather than requests, as the deployed
	// configuration does (configs/haproxy-replicated.cfg passes TLS
	// through), with the kernel moving the bytes between the sockets
	// (splice). The zero value balances HTTP requests, whose retries a
	// rolling restart's tests rely on.
	TCP bool
}

// haproxyConfig is the configuration StartHAProxy writes. The retries are
// what a rolling restart needs from a load balancer: a connection refused
// by a replica that stopped listening, or a kept-alive connection it
// closed before answering, is retried on another replica.
var haproxyConfig = template.Must(template.New("haproxy").Parse(`global
    log stdout format raw local0 info
defaults
{{- if .TCP}}
    mode tcp
    option tcplog
    option splice-auto
{{- else}}
    mode http
    option httplog
{{- end}}
    log global
    option dontlognull
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout check 2s
    retries 3
    option redispatch 1
{{- if not .TCP}}
    retry-on conn-failure empty-response
{{- end}}
frontend registry
    bind {{.Addr}}
    default_backend replicas
frontend stats
    mode http
    bind {{.StatsAddr}}
    stats enable
    stats uri /stats
backend replicas
    balance roundrobin
    option httpchk GET {{.CheckPath}}
    http-check expect status 200
    default-server inter {{.Inter}} fastinter {{.Inter}} downinter {{.Inter}} fall 1 rise 1
{{- range .Servers}}
    server {{.Name}} {{.Addr}} check
{{- end}}
`))

// StartHAProxy starts haproxy in front of backends (host:port each) and
// waits until it listens; servers may still be down (see WaitUp). Without
// haproxy the test is skipped, or fails when CI is set.
func StartHAProxy(t testing.TB, backends []string, opts LBOptions) *LoadBalancer {
	t.Helper()
	// Debian installs it in /usr/sbin, which a user's PATH may lack.
	bin := "/usr/sbin/haproxy"
	if _, err := os.Stat(bin); err != nil {
		bin = Tool(t, "haproxy", "bin/haproxy")
	}
	lb := &LoadBalancer{Addr: FreeAddr(t)}
	lb.URL = "http://" + lb.Addr
	statsAddr := FreeAddr(t)
	lb.StatsURL = "http://" + statsAddr + "/stats;csv"
	for i := range backends {
		lb.Servers = append(lb.Servers, fmt.Sprintf("r%d", i))
	}
	config, err := HAProxyConfig(lb.Addr, statsAddr, backends, opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	// -db: in the foreground, so that the process is haproxy itself.
	lb.Proc = StartProcess(t, "haproxy", nil, bin, "-db", "-f", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := WaitListening(ctx, statsAddr, lb.Proc); err != nil {
		t.Fatalf("haproxy: %v", err)
	}
	if err := WaitListening(ctx, lb.Addr, lb.Proc); err != nil {
		t.Fatalf("haproxy: %v", err)
	}
	return lb
}

// HAProxyConfig is the configuration of a LoadBalancer: a front end on
// addr, statistics on statsAddr (/stats), and backends ("r0", "r1", ...)
// round-robin, health-checked as opts says. The bench runs haproxy with it
// too.
func HAProxyConfig(addr, statsAddr string, backends []string, opts LBOptions) (string, error) {
	if opts.CheckPath == "" {
		opts.CheckPath = "/"
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = 200 * time.Millisecond
	}
	type server struct{ Name, Addr string }
	var servers []server
	for i, b := range backends {
		servers = append(servers, server{fmt.Sprintf("r%d", i), b})
	}
	var b strings.Builder
	err := haproxyConfig.Execute(&b, map[string]any{
		"Addr": addr, "StatsAddr": statsAddr, "CheckPath": opts.CheckPath,
		"Inter": fmt.Sprintf("%dms", opts.CheckInterval.Milliseconds()), "Servers": servers,
		"TCP": opts.TCP,
	})
	return b.String(), err
}

// States returns haproxy's status of each server ("UP", "DOWN", "MAINT",
// "UP 1/2" while changing ...) by name.
func (lb *LoadBalancer) States(ctx context.Context) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, lb.StatsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("haproxy stats: %s", resp.Status)
	}
	r := csv.NewReader(resp.Body)
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("haproxy stats: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("haproxy stats: empty")
	}
	header := rows[0]
	header[0] = strings.TrimPrefix(header[0], "# ")
	px, sv, st := slices.Index(header, "pxname"), slices.Index(header, "svname"), slices.Index(header, "status")
	if px < 0 || sv < 0 || st < 0 {
		return nil, fmt.Errorf("haproxy stats: no pxname, svname or status column in %q", header)
	}
	out := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) > st && row[px] == "replicas" && row[sv] != "BACKEND" {
			out[row[sv]] = row[st]
		}
	}
	return out, nil
}

// WaitState waits until haproxy reports each of servers (names, as in
// Servers) with a status that starts with want ("UP" or "DOWN").
func (lb *LoadBalancer) WaitState(ctx context.Context, want string, servers ...string) error {
	return Poll(ctx, func(ctx context.Context) error {
		states, err := lb.States(ctx)
		if err != nil {
			return err
		}
		for _, s := range servers {
			if !strings.HasPrefix(states[s], want) || (want == "UP" && strings.Contains(states[s], "/")) {
				return fmt.Errorf("haproxy: server %s is %q, want %s (all: %v)", s, states[s], want, states)
			}
		}
		return nil
	}, lb.watch()...)
}

// watch is the process to watch while waiting: none for a LoadBalancer
// made of its URLs only (the bench runs haproxy itself).
func (lb *LoadBalancer) watch() []*Process {
	if lb.Proc == nil {
		return nil
	}
	return []*Process{lb.Proc}
}

// WaitUp waits until haproxy sees every server up.
func (lb *LoadBalancer) WaitUp(ctx context.Context) error {
	return lb.WaitState(ctx, "UP", lb.Servers...)
}
