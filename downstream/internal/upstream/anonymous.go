package upstream

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/config"
)

// anonymous asks a registry with an account for requests that carry no
// credentials (the anonymous option): Basic, or the token flow of the
// registry's challenge (distribution's token protocol, as Docker Hub's
// auth.docker.io speaks it), with the account's credentials at the realm.
//
// Written here rather than taken from oras-go's auth.Client: when the
// realm refuses the account, that client returns an error without the
// registry's answer, and the client of the cache must get the registry's
// own 401 and challenge, unchanged.
type anonymous struct {
	user, password string
	client         *http.Client

	mu     sync.Mutex
	basic  map[string]bool       // hosts that challenged Basic
	tokens map[string]tokenEntry // by host and scope
}

type tokenEntry struct {
	token   string
	expires time.Time
}

func newAnonymous(a *config.Anonymous, client *http.Client) (*anonymous, error) {
	pw, err := a.Secret()
	if err != nil {
		return nil, err
	}
	return &anonymous{user: a.Username, password: pw, client: client, basic: map[string]bool{}, tokens: map[string]tokenEntry{}}, nil
}

// maxChallengeBody bounds the 401 body kept to hand back when the account
// is refused.
const maxChallengeBody = 64 << 10

// do sends hr (which carries no Authorization) with the account.
func (a *anonymous) do(hr *http.Request) (*http.Response, error) {
	host := hr.URL.Host
	pathScope := pullScope(hr.URL.Path)
	scope := pathScope
	if a.useBasic(host) {
		hr.SetBasicAuth(a.user, a.password)
		return a.client.Do(hr)
	}
	if tok := a.token(host, pathScope); tok != "" {
		hr.Header.Set("Authorization", "Bearer "+tok)
		resp, err := a.client.Do(hr)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			return resp, err
		}
		resp.Body.Close()
		hr.Header.Del("Authorization")
	}
	resp, err := a.client.Do(hr)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	// The registry's challenge: kept whole, to hand back unchanged when
	// the account is refused too.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxChallengeBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	switch scheme {
	case "basic":
		a.mu.Lock()
		a.basic[host] = true
		a.mu.Unlock()
		retry := hr.Clone(hr.Context())
		retry.SetBasicAuth(a.user, a.password)
		return refusedAsFirst(a.client.Do(retry))(resp)
	case "bearer":
		if params["scope"] != "" {
			scope = params["scope"]
		}
		tok, expires, err := a.fetchToken(hr, params["realm"], params["service"], scope)
		if err != nil {
			return resp, nil // the registry's own 401: the account cannot pull either
		}
		a.mu.Lock()
		a.tokens[host+" "+pathScope] = tokenEntry{tok, expires}
		a.mu.Unlock()
		retry := hr.Clone(hr.Context())
		retry.Header.Set("Authorization", "Bearer "+tok)
		return refusedAsFirst(a.client.Do(retry))(resp)
	}
	return resp, nil
}

// refusedAsFirst returns the answer to the account's retry, unless the
// registry refused the account too (401): then its first answer, the
// challenge a request without credentials gets, as if the account had not
// been tried (not the challenge to the account's token).
func refusedAsFirst(resp *http.Response, err error) func(first *http.Response) (*http.Response, error) {
	return func(first *http.Response) (*http.Response, error) {
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			return resp, err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxChallengeBody))
		resp.Body.Close()
		return first, nil
	}
}

func (a *anonymous) useBasic(host string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.basic[host]
}

func (a *anonymous) token(host, scope string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.tokens[host+" "+scope]
	if !ok || time.Now().After(e.expires) {
		delete(a.tokens, host+" "+scope)
		return ""
	}
	return e.token
}

// fetchToken asks the realm for a token with the account's credentials.
func (a *anonymous) fetchToken(hr *http.Request, realm, service, scope string) (string, time.Time, error) {
	u, err := url.Parse(realm)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", time.Time{}, fmt.Errorf("bad realm %q", realm)
	}
	if u.Scheme == "http" && hr.URL.Scheme == "https" {
		return "", time.Time{}, fmt.Errorf("realm %q downgrades to http", realm)
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(hr.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		return "", time.Time{}, err
	}
	req.SetBasicAuth(a.user, a.password)
	req.Header.Set("User-Agent", hr.Header.Get("User-Agent"))
	resp, err := a.client.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", time.Time{}, fmt.Errorf("realm answered %d", resp.StatusCode)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", time.Time{}, err
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" {
		return "", time.Time{}, fmt.Errorf("realm gave no token")
	}
	// The spec's default lifetime is 60 s; a token is dropped a little
	// before it ends.
	life := time.Duration(body.ExpiresIn) * time.Second
	if life < 60*time.Second {
		life = 60 * time.Second
	}
	return tok, time.Now().Add(life - 10*time.Second), nil
}

// pullScope is the token scope of a request path: pull on its repository,
// or none for /v2/.
func pullScope(path string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	for _, sep := range []string{"/blobs/", "/manifests/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, sep); i > 0 {
			return "repository:" + rest[:i] + ":pull"
		}
	}
	return ""
}

// parseChallenge reads a WWW-Authenticate header's scheme (lower case) and
// parameters: Basic realm="x", or Bearer realm="...",service="...",scope="...".
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; rest = strings.TrimLeft(strings.TrimSpace(rest), ",") {
		rest = strings.TrimSpace(rest)
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := 1
			var b strings.Builder
			for ; end < len(v) && v[end] != '"'; end++ {
				if v[end] == '\\' && end+1 < len(v) {
					end++
				}
				b.WriteByte(v[end])
			}
			params[k] = b.String()
			rest = v[min(end+1, len(v)):]
		} else {
			val, after, _ := strings.Cut(v, ",")
			params[k] = strings.TrimSpace(val)
			rest = after
		}
	}
	return strings.ToLower(scheme), params
}
