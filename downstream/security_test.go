package downstream_test

// Authorization under concurrency: what a client may get while another
// client's fill runs over a slow upstream. Every case compares the cache's
// answer with the origin's for the same credential, repository and digest.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"math/rand"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream"
	"github.com/content-cache/content-cache/internal/regtest"
)

// secACL: anonymous and bob may pull public/*; carol may pull private/*
// and public/*; alice may do anything.
func secACL(user, repo string) []string {
	switch {
	case user == "alice":
		return []string{"*"}
	case user == "carol":
		return []string{"pull"}
	case strings.HasPrefix(repo, "public/"):
		return []string{"pull"}
	}
	return nil
}

// secOrigin is an origin with token or htpasswd auth, and the credentials
// of its users.
type secOrigin struct {
	*regtest.Server
	ts   *regtest.TokenServer // nil: htpasswd
	auth configuration.Auth

	mu     sync.Mutex
	tokens map[[2]string]string
}

const (
	anonymous = ""
	garbage   = "\x00garbage" // a user whose credential the origin cannot parse
)

func newSecOrigin(t *testing.T, token bool) *secOrigin {
	o := &secOrigin{tokens: map[[2]string]string{}}
	if token {
		o.ts = regtest.NewTokenServer(t, users, secACL)
		o.auth = o.ts.AuthConfig()
	} else {
		o.auth = regtest.HtpasswdAuth(t, users)
	}
	o.Server = regtest.StartOrigin(t, o.auth)
	return o
}

// access is what user may do on repo, as the origin's token service would
// grant a pull.
func (o *secOrigin) access(user, repo string) []regtest.ResourceActions {
	var actions []string
	if a := secACL(user, repo); len(a) > 0 {
		actions = []string{"pull"}
	}
	return []regtest.ResourceActions{{Type: "repository", Name: repo, Actions: actions}}
}

// authz is user's Authorization header for a pull of repo: the same header
// every time, as a client reusing its token sends.
func (o *secOrigin) authz(user, repo string) string {
	switch {
	case user == garbage && o.ts != nil:
		return "Bearer not-a-token"
	case user == garbage:
		return basic("carol", "not-her-password")
	case o.ts == nil && user == anonymous:
		return ""
	case o.ts == nil:
		return basic(user, users[user])
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	k := [2]string{user, repo}
	if tok, ok := o.tokens[k]; ok {
		return tok
	}
	tok := "Bearer " + o.ts.Mint(user, o.access(user, repo), time.Hour)
	o.tokens[k] = tok
	return tok
}

// revocable returns a credential of user for repo that the test can revoke
// at the origin with the returned function, which returns once the origin
// refuses it.
func (o *secOrigin) revocable(t *testing.T, user, repo, path string) (string, func()) {
	if o.ts == nil {
		return basic(user, users[user]), func() {
			others := map[string]string{}
			for u, p := range users {
				if u != user {
					others[u] = p
				}
			}
			regtest.SetHtpasswd(t, o.auth, others)
			if a := send(t.Context(), o.URL, http.MethodGet, path, basic(user, users[user]), nil); a.status != http.StatusUnauthorized {
				t.Fatalf("origin still answers %d to %s after revocation", a.status, user)
			}
		}
	}
	// A token the origin stops accepting within seconds: the origin has no
	// other way to revoke one.
	tok := "Bearer " + o.ts.MintExpiring(user, o.access(user, repo), 3*time.Second)
	return tok, func() {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		for send(ctx, o.URL, http.MethodGet, path, tok, nil).status != http.StatusUnauthorized {
			if ctx.Err() != nil {
				t.Fatal("the origin kept accepting the expiring token")
			}
			// The token expires on the origin's wall clock: poll it.
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// answer is one response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func send(ctx context.Context, base, method, path, authz string, hdr http.Header) answer {
	return sendRead(ctx, base, method, path, authz, hdr, true)
}

// sendRead is send, reading the body only if whole (a body that would wait
// for a held fill is closed unread).
func sendRead(ctx context.Context, base, method, path, authz string, hdr http.Header, whole bool) answer {
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return answer{err: err}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	if !whole && resp.StatusCode == http.StatusOK {
		return answer{status: resp.StatusCode, header: resp.Header}
	}
	body, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: body, err: err}
}

// secSetup is an origin behind a slow link, and one cache or a chain of
// two in front of it, all on one clock the test moves.
type secSetup struct {
	origin *secOrigin
	link   *regtest.SlowLink
	clock  *regtest.Clock
	near   *regtest.Server // the cache next to the origin
	front  *regtest.Server // the cache clients talk to (near without a chain)
	// attack is where the requests of other users than the one filling go:
	// front, or with replicas another replica than the fill's.
	attack *regtest.Server
}

// topology is how the caches of a security test are laid out.
type topology string

const (
	topoCache    topology = "cache"    // one cache
	topoChain    topology = "chain"    // a cache behind a cache
	topoReplicas topology = "replicas" // two replicas on one storage and Redis: the fill on one, the others' requests on the other
)

func newSecSetup(t *testing.T, token bool, topo topology, link regtest.SlowLinkOptions) *secSetup {
	s := &secSetup{origin: newSecOrigin(t, token), clock: &regtest.Clock{}}
	s.link = regtest.NewSlowLink(t, s.origin.URL, link)
	start := func(upstream string, more map[string]any) *regtest.Server {
		extra := map[string]any{"authttl": "30s"}
		maps.Copy(extra, more)
		downstream.SetOptions(extra, downstream.Options{Now: s.clock.Now})
		return regtest.StartCache(t, upstream, extra)
	}
	switch topo {
	case topoReplicas:
		redis := regtest.StartRedis(t)
		root := t.TempDir()
		var rs []*regtest.Server
		for range 2 {
			extra := map[string]any{"authttl": "30s", "redis": map[any]any{"addr": redis.Addr, "leasettl": "5s"}}
			downstream.SetOptions(extra, downstream.Options{Now: s.clock.Now})
			r := regtest.StartCacheAt(t, root, s.link.URL, extra)
			r.Cache.JoinCluster(r.URL, r.Config.HTTP.Secret)
			rs = append(rs, r)
		}
		s.near, s.front, s.attack = rs[0], rs[0], rs[1]
		return s
	case topoChain:
		s.near = start(s.link.URL, nil)
		s.front = start(s.near.URL, nil)
	default:
		s.near = start(s.link.URL, nil)
		s.front = s.near
	}
	s.attack = s.front
	return s
}

// idle waits until no cache serves a request any more (fills committed).
func (s *secSetup) idle(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, c := range []*regtest.Server{s.front, s.near, s.attack} {
		if err := c.WaitIdle(ctx); err != nil {
			t.Fatalf("cache not idle: %v", err)
		}
	}
}

// forEachTopology runs f with token and htpasswd auth, through one cache
// through a chain of two, and through two replicas (the fill on one, the
// other users on the other).
// No goroutine outlives them: fills, waiters and slow links all end.
func forEachTopology(t *testing.T, f func(t *testing.T, token bool, topo topology)) {
	noLeaks(t)
	for _, auth := range []string{"token", "htpasswd"} {
		for _, topo := range []topology{topoCache, topoChain, topoReplicas} {
			t.Run(auth+"/"+string(topo), func(t *testing.T) {
				t.Parallel()
				f(t, auth == "token", topo)
			})
		}
	}
}

// sameAsOrigin checks that the cache answered as the origin does; a refusal
// must carry no byte of private.
func sameAsOrigin(t *testing.T, what string, got, want answer, private []byte) {
	t.Helper()
	if got.err != nil || want.err != nil {
		t.Errorf("%s: cache error %v, origin error %v", what, got.err, want.err)
		return
	}
	if got.status != want.status {
		t.Errorf("%s: cache answered %d, origin %d (%.120q)", what, got.status, want.status, got.body)
	}
	if g, w := got.header.Get("WWW-Authenticate"), want.header.Get("WWW-Authenticate"); g != w {
		t.Errorf("%s: cache challenge %q, origin %q", what, g, w)
	}
	if want.status >= 300 && len(got.body) >= 32 && bytes.Contains(private, got.body[:32]) {
		t.Errorf("%s: private bytes reached a client the origin refuses", what)
	}
}

// secretImage is a private image whose layers take a while over the link.
func secretImage(t *testing.T, o *secOrigin, seed int64, layers, size int) regtest.Image {
	img := regtest.RandomImage(seed, layers, size)
	img.Repo, img.Tag = "private/secret", "v1"
	push(t, o.Server, img)
	return img
}

// While carol's fill of a private blob runs, a client allowed on another
// repository (that lacks the blob at the origin) gets what the origin
// gives it, 404, by GET, HEAD and Range, before and after the fill: the
// blob is not linked into its repository.
func TestFillAuthorizesNoOtherRepository(t *testing.T) {
	forEachTopology(t, func(t *testing.T, token bool, topo topology) {
		s := newSecSetup(t, token, topo, regtest.SlowLinkOptions{Rate: 4 << 20, HoldAt: 512 << 10})
		secret := secretImage(t, s.origin, 40, 1, 1<<20)
		app := regtest.RandomImage(41, 1, 4096)
		app.Repo, app.Tag = "public/app", "v1"
		push(t, s.origin.Server, app)
		layer := digest.FromBytes(secret.Layers[0])

		// bob (and anonymous, with a token origin) learn public/app: each
		// cache holds an "allowed" decision for them there.
		intruders := []string{"bob"}
		if token {
			intruders = append(intruders, anonymous)
		}
		for _, who := range intruders {
			if a := send(t.Context(), s.attack.URL, http.MethodGet, "/v2/public/app/manifests/v1", s.origin.authz(who, "public/app"), ociAccept()); a.status != http.StatusOK {
				t.Fatalf("%q pulling public/app: %d %s", who, a.status, a.body)
			}
		}

		carol := make(chan answer, 1)
		go func() {
			carol <- send(t.Context(), s.front.URL, http.MethodGet, "/v2/private/secret/blobs/"+layer.String(), s.origin.authz("carol", "private/secret"), nil)
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := s.link.WaitHeld(ctx, 1); err != nil {
			t.Fatalf("carol's fill never got going: %v", err)
		}

		probe := func(when string, whole bool) {
			for _, who := range append(intruders, "alice") {
				for _, v := range []struct {
					method string
					hdr    http.Header
				}{
					{http.MethodGet, nil},
					{http.MethodHead, nil},
					{http.MethodGet, http.Header{"Range": {"bytes=0-99"}}},
				} {
					path := "/v2/public/app/blobs/" + layer.String()
					authz := s.origin.authz(who, "public/app")
					got := sendRead(t.Context(), s.attack.URL, v.method, path, authz, v.hdr, whole)
					want := send(t.Context(), s.origin.URL, v.method, path, authz, v.hdr)
					sameAsOrigin(t, fmt.Sprintf("%s: %q %s %v of carol's blob through public/app", when, who, v.method, v.hdr), got, want, secret.Layers[0])
				}
			}
		}
		probe("during the fill", false)
		s.link.Release()
		if a := <-carol; a.status != http.StatusOK || !bytes.Equal(a.body, secret.Layers[0]) {
			t.Fatalf("carol: status %d, %d bytes (err %v)", a.status, len(a.body), a.err)
		}
		s.idle(t)
		probe("after the fill", true)
	})
}

// A flood of requests without valid credentials for the digest carol is
// pulling changes nothing for carol: every one of her cold pulls gets the
// blob, and every intruder gets the origin's own answer.
func TestUnauthorizedFloodFailsNoAuthorizedPull(t *testing.T) {
	forEachTopology(t, func(t *testing.T, token bool, topo topology) {
		s := newSecSetup(t, token, topo, regtest.SlowLinkOptions{Rate: 8 << 20, HoldAt: -1, Latency: 20 * time.Millisecond})
		const layers = 8
		secret := secretImage(t, s.origin, 42, layers, 256<<10)
		paths := make([]string, layers)
		for i, l := range secret.Layers {
			paths[i] = "/v2/private/secret/blobs/" + digest.FromBytes(l).String()
		}
		intruders := []string{anonymous, garbage}
		want := map[string]answer{}
		for _, who := range intruders {
			want[who] = send(t.Context(), s.origin.URL, http.MethodGet, paths[0], s.origin.authz(who, "private/secret"), nil)
			if want[who].status < 400 {
				t.Fatalf("origin lets %q pull: %d", who, want[who].status)
			}
		}

		// The flood hammers the layer carol is pulling.
		var current atomic.Int32
		ctx, stop := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		var mu sync.Mutex
		var wrong []string
		for i := range 48 {
			wg.Go(func() {
				who := intruders[i%len(intruders)]
				for ctx.Err() == nil {
					got := send(ctx, s.attack.URL, http.MethodGet, paths[current.Load()], s.origin.authz(who, "private/secret"), nil)
					if ctx.Err() != nil {
						return
					}
					if got.status != want[who].status || got.header.Get("WWW-Authenticate") != want[who].header.Get("WWW-Authenticate") {
						mu.Lock()
						wrong = append(wrong, fmt.Sprintf("%q got %d %q, origin gives %d", who, got.status, got.header.Get("WWW-Authenticate"), want[who].status))
						mu.Unlock()
					}
				}
			})
		}
		var failed []string
		for i, path := range paths {
			current.Store(int32(i))
			got := send(t.Context(), s.front.URL, http.MethodGet, path, s.origin.authz("carol", "private/secret"), nil)
			if got.status != http.StatusOK || !bytes.Equal(got.body, secret.Layers[i]) {
				failed = append(failed, fmt.Sprintf("layer %d: %d %q", i, got.status, got.header.Get("WWW-Authenticate")))
			}
		}
		stop()
		wg.Wait()
		if len(failed) > 0 {
			t.Errorf("carol's cold pulls failed under the flood, %d of %d: %v", len(failed), layers, failed)
		}
		if len(wrong) > 0 {
			t.Errorf("%d intruder answers differ from the origin's, e.g. %v", len(wrong), wrong[:min(3, len(wrong))])
		}
	})
}

// A credential revoked at the origin, asking again after authttl for the
// blob its own fill still fetches, gets the origin's refusal.
func TestRevokedCredentialJoinsNoFill(t *testing.T) {
	forEachTopology(t, func(t *testing.T, token bool, topo topology) {
		s := newSecSetup(t, token, topo, regtest.SlowLinkOptions{Rate: 4 << 20, HoldAt: 512 << 10})
		secret := secretImage(t, s.origin, 43, 1, 1<<20)
		path := "/v2/private/secret/blobs/" + digest.FromBytes(secret.Layers[0]).String()
		authz, revoke := s.origin.revocable(t, "carol", "private/secret", path)

		first := make(chan answer, 1)
		go func() { first <- send(t.Context(), s.front.URL, http.MethodGet, path, authz, nil) }()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := s.link.WaitHeld(ctx, 1); err != nil {
			t.Fatalf("the fill never got going: %v", err)
		}
		revoke()
		s.clock.Advance(33 * time.Second) // authttl is 30s
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			got := sendRead(t.Context(), s.attack.URL, method, path, authz, nil, false)
			want := send(t.Context(), s.origin.URL, method, path, authz, nil)
			sameAsOrigin(t, "revoked carol "+method+" during her own fill", got, want, secret.Layers[0])
		}
		s.link.Release()
		if a := <-first; a.status != http.StatusOK || !bytes.Equal(a.body, secret.Layers[0]) {
			t.Errorf("the request that started the fill while allowed: %d, %d bytes", a.status, len(a.body))
		}
	})
}

// In a chain, a revocation takes effect within authttl, not twice that:
// the far cache asks the near one without letting it answer from its own
// decisions.
func TestChainRevocationWithinAuthTTL(t *testing.T) {
	for _, auth := range []string{"token", "htpasswd"} {
		t.Run(auth, func(t *testing.T) {
			t.Parallel()
			s := newSecSetup(t, auth == "token", topoChain, regtest.SlowLinkOptions{Rate: 64 << 20, HoldAt: -1})
			secret := secretImage(t, s.origin, 44, 1, 64<<10)
			path := "/v2/private/secret/blobs/" + digest.FromBytes(secret.Layers[0]).String()
			authz, revoke := s.origin.revocable(t, "carol", "private/secret", path)
			// The near cache learns carol, and stores the blob.
			if a := send(t.Context(), s.near.URL, http.MethodGet, path, authz, nil); a.status != http.StatusOK {
				t.Fatalf("carol through the near cache: %d", a.status)
			}
			s.idle(t)
			revoke()
			s.clock.Advance(20 * time.Second) // within the near cache's authttl
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				got := send(t.Context(), s.front.URL, method, path, authz, nil)
				want := send(t.Context(), s.origin.URL, method, path, authz, nil)
				sameAsOrigin(t, "revoked carol "+method+" through the chain", got, want, secret.Layers[0])
			}
		})
	}
}

// Several credentials, repositories and digests, some private and one
// layer shared, hammering a cache over a slow upstream: every answer equals
// the origin's for that credential, repository and digest.
func TestRandomizedAuthorization(t *testing.T) {
	forEachTopology(t, func(t *testing.T, token bool, topo topology) {
		s := newSecSetup(t, token, topo, regtest.SlowLinkOptions{Rate: 16 << 20, HoldAt: -1, Latency: 5 * time.Millisecond})
		secret := secretImage(t, s.origin, 45, 3, 128<<10)
		app := regtest.RandomImage(46, 2, 128<<10)
		app.Repo, app.Tag = "public/app", "v1"
		app.Layers = append(app.Layers, secret.Layers[2]) // shared with private/secret
		app = regtest.WithLayers(app, app.Layers)
		push(t, s.origin.Server, app)
		other := regtest.RandomImage(47, 2, 96<<10)
		other.Repo, other.Tag = "public/other", "v1"
		push(t, s.origin.Server, other)

		blobs := map[digest.Digest][]byte{}
		for _, img := range []regtest.Image{secret, app, other} {
			for _, l := range img.Layers {
				blobs[digest.FromBytes(l)] = l
			}
		}
		type req struct{ who, repo, path string }
		var reqs []req
		for _, who := range []string{"alice", "bob", "carol", anonymous, garbage} {
			for _, repo := range []string{secret.Repo, app.Repo, other.Repo} {
				for d := range blobs {
					reqs = append(reqs, req{who, repo, "/v2/" + repo + "/blobs/" + d.String()})
				}
			}
		}
		want := make(map[req]int, len(reqs))
		for _, q := range reqs {
			want[q] = send(t.Context(), s.origin.URL, http.MethodGet, q.path, s.origin.authz(q.who, q.repo), nil).status
		}
		var all []req
		for range 3 {
			all = append(all, reqs...)
		}
		rand.New(rand.NewSource(48)).Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })

		work := make(chan req)
		var mu sync.Mutex
		var wrong []string
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for q := range work {
					got := send(t.Context(), s.front.URL, http.MethodGet, q.path, s.origin.authz(q.who, q.repo), nil)
					d := digest.Digest(q.path[strings.LastIndex(q.path, "/")+1:])
					bad := got.status != want[q]
					if got.status == http.StatusOK && !bytes.Equal(got.body, blobs[d]) {
						bad = true
					}
					if bad {
						mu.Lock()
						wrong = append(wrong, fmt.Sprintf("%q %s: cache %d (%d bytes), origin %d", q.who, q.path, got.status, len(got.body), want[q]))
						mu.Unlock()
					}
				}
			})
		}
		for _, q := range all {
			work <- q
		}
		close(work)
		wg.Wait()
		slices.Sort(wrong)
		if len(wrong) > 0 {
			t.Errorf("%d of %d answers differ from the origin's:\n%s", len(wrong), len(all), strings.Join(wrong[:min(10, len(wrong))], "\n"))
		}
	})
}
