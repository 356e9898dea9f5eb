package regtest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image is a complete OCI image held in memory.
type Image struct {
	Repo, Tag string
	Manifest  []byte
	MediaType string
	Digest    digest.Digest // of Manifest
	Config    []byte
	Layers    [][]byte
}

// RandomImage builds an OCI image with layers layers of exactly size random
// bytes each; the same seed always yields the same image. Layers are opaque
// bytes labelled as uncompressed tar (registries never look inside), so the
// image is fine for transfer tests but cannot be unpacked. Repo and Tag
// default to "regtest/random" and "latest".
func RandomImage(seed int64, layers int, size int) Image {
	r := rand.New(rand.NewSource(seed))
	blobs := make([][]byte, 0, layers)
	for range layers {
		b := make([]byte, size)
		_, _ = r.Read(b) // never fails
		blobs = append(blobs, b)
	}
	return imageOf(strconv.FormatInt(seed, 10), blobs)
}

// WithLayers returns img with other layers: a new config and manifest
// listing them, the same repository and tag.
func WithLayers(img Image, layers [][]byte) Image {
	out := imageOf(img.Digest.String(), layers)
	out.Repo, out.Tag = img.Repo, img.Tag
	return out
}

// imageOf builds an OCI image of layers; label keeps configs (and so
// manifests) distinct even for images without layers.
func imageOf(label string, layers [][]byte) Image {
	img := Image{Repo: "regtest/random", Tag: "latest", MediaType: v1.MediaTypeImageManifest, Layers: layers}
	descs := make([]v1.Descriptor, 0, len(layers))
	diffIDs := make([]digest.Digest, 0, len(layers))
	for _, b := range layers {
		d := digest.FromBytes(b)
		descs = append(descs, v1.Descriptor{MediaType: v1.MediaTypeImageLayer, Digest: d, Size: int64(len(b))})
		diffIDs = append(diffIDs, d) // uncompressed, so diff ID == digest
	}
	img.Config = mustJSON(v1.Image{
		Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
		Config:   v1.ImageConfig{Labels: map[string]string{"org.content-cache.regtest.seed": label}},
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	img.Manifest = mustJSON(v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config: v1.Descriptor{
			MediaType: v1.MediaTypeImageConfig,
			Digest:    digest.FromBytes(img.Config),
			Size:      int64(len(img.Config)),
		},
		Layers: descs,
	})
	img.Digest = digest.FromBytes(img.Manifest)
	return img
}

// Push uploads img's blobs and then its manifest, tagged img.Tag, to
// img.Repo on the registry at baseURL.
func Push(ctx context.Context, baseURL, user, pass string, img Image) error {
	return PushWith(ctx, nil, baseURL, user, pass, img)
}

// PushWith is Push with an HTTP client of the caller's (nil: the default).
func PushWith(ctx context.Context, hc *http.Client, baseURL, user, pass string, img Image) error {
	if img.Repo == "" || img.Tag == "" {
		return errors.New("regtest: push needs Image.Repo and Image.Tag")
	}
	c := &Client{Base: baseURL, User: user, Pass: pass, HTTP: hc}
	for _, b := range append([][]byte{img.Config}, img.Layers...) {
		if err := c.pushBlob(ctx, img.Repo, b); err != nil {
			return err
		}
	}
	_, err := c.putManifest(ctx, img.Repo, img.Tag, img.MediaType, img.Manifest)
	return err
}

// PushIndex pushes, tagged tag in repo, an OCI index over imgs, whose
// manifests must already be in repo (the registry checks). Platforms are
// taken from each image's config.
func PushIndex(ctx context.Context, baseURL, user, pass, repo, tag string, imgs []Image) (digest.Digest, error) {
	idx := v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageIndex,
		Manifests: make([]v1.Descriptor, 0, len(imgs)),
	}
	for _, img := range imgs {
		d := v1.Descriptor{MediaType: img.MediaType, Digest: img.Digest, Size: int64(len(img.Manifest))}
		var cfg v1.Image
		if json.Unmarshal(img.Config, &cfg) == nil && cfg.OS != "" {
			d.Platform = &cfg.Platform
		}
		idx.Manifests = append(idx.Manifests, d)
	}
	c := &Client{Base: baseURL, User: user, Pass: pass}
	return c.putManifest(ctx, repo, tag, v1.MediaTypeImageIndex, mustJSON(idx))
}

func (c *Client) pushBlob(ctx context.Context, repo string, b []byte) error {
	d := digest.FromBytes(b)
	resp, err := c.Do(ctx, http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}

	resp, err = c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil {
		return err
	}
	if _, err := readExpect(resp, http.StatusAccepted); err != nil {
		return err
	}
	loc, err := c.resolve(resp.Header.Get("Location"))
	if err != nil {
		return fmt.Errorf("regtest: upload location: %w", err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()

	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	resp, err = c.do(ctx, http.MethodPut, loc.String(), hdr, b)
	if err != nil {
		return err
	}
	_, err = readExpect(resp, http.StatusCreated)
	return err
}

func (c *Client) putManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (digest.Digest, error) {
	hdr := http.Header{"Content-Type": {mediaType}}
	resp, err := c.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, hdr, body)
	if err != nil {
		return "", err
	}
	if _, err := readExpect(resp, http.StatusCreated); err != nil {
		return "", err
	}
	want := digest.FromBytes(body)
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != want.String() {
		return "", fmt.Errorf("regtest: registry stored manifest as %s, expected %s", got, want)
	}
	return want, nil
}

// Client is a minimal registry client that answers 401 challenges: Basic
// by resending credentials, Bearer by fetching a token from the realm.
// It is safe for concurrent use; don't copy it after first use.
type Client struct {
	Base, User, Pass string
	HTTP             *http.Client // nil means http.DefaultClient

	mu     sync.Mutex
	basic  bool              // registry wants Basic: send it up front
	scopes map[string]string // request class -> scope of its last challenge
	tokens map[string]string // scope -> bearer token
}

// Do sends a bodiless request to path (relative to Base, or absolute). A
// cached token for the same kind of request is sent up front; on a 401 it
// authenticates per the challenge and retries once. The caller closes the
// response body; a non-2xx response is not an error.
func (c *Client) Do(ctx context.Context, method, path string, hdr http.Header) (*http.Response, error) {
	return c.do(ctx, method, path, hdr, nil)
}

func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, body []byte) (*http.Response, error) {
	u, err := c.resolve(path)
	if err != nil {
		return nil, err
	}
	class := requestClass(method, u.Path)

	resp, err := c.send(ctx, method, u, hdr, body, c.cachedAuth(class))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}

	var authz string
	for _, v := range resp.Header.Values("WWW-Authenticate") {
		scheme, params := ParseChallenge(v)
		switch {
		case scheme == "bearer" && authz == "":
			tok, err := c.fetchToken(ctx, params)
			if err != nil {
				drain(resp)
				return nil, err
			}
			c.remember(class, params["scope"], tok)
			authz = "Bearer " + tok
		case scheme == "basic" && authz == "" && c.User != "":
			c.mu.Lock()
			c.basic = true
			c.mu.Unlock()
			authz = c.basicAuth()
		}
	}
	if authz == "" {
		return resp, nil
	}
	drain(resp)
	return c.send(ctx, method, u, hdr, body, authz)
}

func (c *Client) send(ctx context.Context, method string, u *url.URL, hdr http.Header, body []byte, authz string) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
	if err != nil {
		return nil, err
	}
	for k, vs := range hdr {
		req.Header[k] = slices.Clone(vs)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	return c.httpClient().Do(req)
}

// fetchToken gets (and caches) a token for a Bearer challenge.
func (c *Client) fetchToken(ctx context.Context, ch map[string]string) (string, error) {
	realm, err := url.Parse(ch["realm"])
	if err != nil || realm.Scheme == "" {
		return "", fmt.Errorf("regtest: bad realm %q in challenge", ch["realm"])
	}
	scopes := strings.Fields(ch["scope"])
	q := realm.Query()
	if s := ch["service"]; s != "" {
		q.Set("service", s)
	}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	realm.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", err
	}
	if c.User != "" {
		req.SetBasicAuth(c.User, c.Pass)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return "", err
	}
	body, err := readExpect(resp, http.StatusOK)
	if err != nil {
		return "", err
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return "", fmt.Errorf("regtest: decode token response: %w", err)
	}
	tok := cmp.Or(tr.Token, tr.AccessToken)
	if tok == "" {
		return "", errors.New("regtest: token response without token")
	}
	return tok, nil
}

// remember caches tok under its (normalised) scope and points class at it.
func (c *Client) remember(class, scope, tok string) {
	scope = normScope(scope)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.scopes == nil {
		c.scopes, c.tokens = map[string]string{}, map[string]string{}
	}
	c.scopes[class] = scope
	c.tokens[scope] = tok
}

// normScope orders scopes and actions: distribution builds challenge
// scopes from maps, so the same scope comes back in varying orders.
func normScope(s string) string {
	scopes := strings.Fields(s)
	for i, sc := range scopes {
		if j := strings.LastIndex(sc, ":"); j >= 0 {
			actions := strings.Split(sc[j+1:], ",")
			slices.Sort(actions)
			scopes[i] = sc[:j+1] + strings.Join(actions, ",")
		}
	}
	slices.Sort(scopes)
	return strings.Join(scopes, " ")
}

func (c *Client) cachedAuth(class string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.basic {
		return c.basicAuth()
	}
	if tok := c.tokens[c.scopes[class]]; tok != "" {
		return "Bearer " + tok
	}
	return ""
}

func (c *Client) basicAuth() string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(c.User+":"+c.Pass))
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) resolve(ref string) (*url.URL, error) {
	base, err := url.Parse(c.Base)
	if err != nil {
		return nil, err
	}
	r, err := url.Parse(ref)
	if err != nil {
		return nil, err
	}
	return base.ResolveReference(r), nil
}

// requestClass groups requests likely to need the same token: same
// repository, read or write. A wrong guess only costs an extra 401.
func requestClass(method, path string) string {
	repo := path
	for _, marker := range []string{"/manifests/", "/tags/", "/blobs/uploads/", "/blobs/"} {
		if i := strings.LastIndex(path, marker); i >= 0 {
			repo = path[:i]
			break
		}
	}
	if method == http.MethodGet || method == http.MethodHead {
		return "pull " + repo
	}
	return "push " + repo
}

// ParseChallenge splits one WWW-Authenticate value such as
// `Bearer realm="https://x/token",service="reg",scope="repository:a:pull"`
// into a lower-cased scheme and its parameters (keys lower-cased).
func ParseChallenge(v string) (scheme string, params map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	params = map[string]string{}
	for {
		rest = strings.TrimLeft(rest, " ,")
		k, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		var val strings.Builder
		if strings.HasPrefix(after, `"`) {
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				val.WriteByte(after[i])
			}
			rest = after[min(i+1, len(after)):]
		} else {
			end := strings.IndexAny(after, ", ")
			if end < 0 {
				end = len(after)
			}
			val.WriteString(after[:end])
			rest = after[end:]
		}
		params[strings.ToLower(strings.TrimSpace(k))] = val.String()
	}
	return strings.ToLower(scheme), params
}

// HTTPError is an unexpected registry or token server response.
type HTTPError struct {
	Method     string
	URL        string // without query, which may hold upload state
	StatusCode int
	Header     http.Header
	Body       string
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if wa := e.Header.Values("WWW-Authenticate"); len(wa) > 0 {
		msg += " [WWW-Authenticate: " + strings.Join(wa, "; ") + "]"
	}
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// readExpect reads and closes resp's body, returning an *HTTPError unless
// the status is want.
func readExpect(resp *http.Response, want int) ([]byte, error) {
	defer resp.Body.Close()
	if resp.StatusCode == want {
		body, err := io.ReadAll(resp.Body)
		return body, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	u := *resp.Request.URL
	u.RawQuery = ""
	return nil, &HTTPError{
		Method:     resp.Request.Method,
		URL:        u.String(),
		StatusCode: resp.StatusCode,
		Header:     resp.Header,
		Body:       strings.TrimSpace(string(body)),
	}
}

// drain lets the connection be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// WithPlatform returns img for another platform: its config says os/arch
// (so PushIndex lists it so), hence another config digest and manifest.
func WithPlatform(img Image, os, arch string) Image {
	var cfg v1.Image
	_ = json.Unmarshal(img.Config, &cfg) // Images of this package always parse
	cfg.OS, cfg.Architecture = os, arch
	out := img
	out.Config = mustJSON(cfg)
	var m v1.Manifest
	_ = json.Unmarshal(img.Manifest, &m)
	m.Config.Digest, m.Config.Size = digest.FromBytes(out.Config), int64(len(out.Config))
	out.Manifest = mustJSON(m)
	out.Digest = digest.FromBytes(out.Manifest)
	return out
}
