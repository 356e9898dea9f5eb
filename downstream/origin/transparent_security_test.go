package origin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/content-cache/content-cache/downstream/internal/signature"
	"github.com/content-cache/content-cache/internal/regtest"
)

// oneError decodes an OCI error body with exactly one error.
func oneError(t *testing.T, body string) (code, message string) {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("not one OCI error: %q", body)
	}
	return e.Errors[0].Code, e.Errors[0].Message
}

// TestTransparentSecurity: at the cache, every signed URL that is not
// exactly the origin's, for this cache, this repository and digest and
// still valid, is refused with 401 UNAUTHORIZED saying why, without a
// byte of the blob, without asking the origin, and without the signature
// in the answer or the log.
func TestTransparentSecurity(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	// region-us is another cache known to the origin.
	us, usLogs := signingCache(t, s.og.URL, s.og.URL+keysPath, "region-us", nil, s.clock)
	register(t, s.og, "", "region-us", us.URL)

	layer := s.img.Layers[0]
	dgst := digestOf(layer)
	other := digestOf(s.img.Layers[1])
	valid := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	q := valid.Query()
	cacheBase := valid.Scheme + "://" + valid.Host
	sig := q.Get(signature.ParamSig)

	with := func(k, v string) url.Values {
		out := url.Values{}
		for k2, vs := range q {
			out[k2] = append([]string(nil), vs...)
		}
		out.Set(k, v)
		return out
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[len(b)/2] == 'A' {
			b[len(b)/2] = 'B'
		} else {
			b[len(b)/2] = 'A'
		}
		return string(b)
	}
	signer := originSigner(t)
	signed := func(c signature.Claims) url.Values { return signer.Sign(c) }
	claims := signature.Claims{Method: http.MethodGet, Repository: s.img.Repo, Digest: dgst, Expiry: s.clock.Now().Add(time.Minute), Cache: "region-asia"}
	expired := claims
	expired.Expiry = s.clock.Now().Add(-time.Second)
	forOther := claims
	forOther.Repository = "other/repo"
	stranger := signerOf(t, seeded(9)).Sign(claims)
	dup := with(signature.ParamSig, sig)
	dup.Add(signature.ParamSig, sig)
	missing := with(signature.ParamSig, "")
	missing.Del(signature.ParamSig)

	blob := func(repo, d string) string { return "/v2/" + repo + "/blobs/" + d }
	cases := []struct {
		name  string
		base  string
		path  string
		query url.Values
		want  string // in the message
	}{
		{"method altered", cacheBase, s.blobPath, with(signature.ParamMethod, http.MethodHead), "bad signature"},
		{"repository altered", cacheBase, s.blobPath, with(signature.ParamRepo, "other/repo"), "bad signature"},
		{"repository altered with the path", cacheBase, blob("other/repo", dgst), with(signature.ParamRepo, "other/repo"), "bad signature"},
		{"digest altered", cacheBase, s.blobPath, with(signature.ParamDigest, other), "bad signature"},
		{"digest altered with the path", cacheBase, blob(s.img.Repo, other), with(signature.ParamDigest, other), "bad signature"},
		{"expiry altered", cacheBase, s.blobPath, with(signature.ParamExpiry, "4102444800"), "bad signature"},
		{"cache altered", cacheBase, s.blobPath, with(signature.ParamCache, "region-us"), "bad signature"},
		{"key id altered", cacheBase, s.blobPath, with(signature.ParamKeyID, "another-key"), "unknown key id"},
		{"signature altered", cacheBase, s.blobPath, with(signature.ParamSig, flip(sig)), "bad signature"},
		{"signature missing", cacheBase, s.blobPath, missing, "malformed"},
		{"signature repeated", cacheBase, s.blobPath, dup, "malformed"},
		{"expired", cacheBase, s.blobPath, signed(expired), "expired"},
		{"for cache A at cache B", us.URL, s.blobPath, q, `issued for another cache: signed for cache "region-asia", this is "region-us"`},
		{"valid, on another repository", cacheBase, blob("other/repo", dgst), q, `signed for repository "` + s.img.Repo + `", request is for "other/repo"`},
		{"valid, on another digest", cacheBase, blob(s.img.Repo, other), q, "signed for digest " + dgst + ", request is for " + other},
		{"valid for another repository", cacheBase, s.blobPath, signed(forOther), `signed for repository "other/repo"`},
		{"unknown key", cacheBase, s.blobPath, stranger, "unknown key id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.og.Counts.snapshot()
			resp := send(t, http.MethodGet, tc.base+tc.path+"?"+tc.query.Encode())
			b := body(resp)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %q", resp.StatusCode, b)
			}
			code, msg := oneError(t, b)
			if code != "UNAUTHORIZED" || !strings.HasPrefix(msg, "signed URL refused: ") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %s %q, want UNAUTHORIZED saying %q", code, msg, tc.want)
			}
			for _, v := range tc.query[signature.ParamSig] {
				if strings.Contains(b, v) {
					t.Errorf("the answer echoes the signature")
				}
			}
			if strings.Contains(b, string(layer[:16])) {
				t.Errorf("the answer holds blob bytes")
			}
			if after := s.og.Counts.snapshot(); after.requests != before.requests {
				t.Errorf("the cache asked the origin %d times for a refused signature", after.requests-before.requests)
			}
		})
	}
	for name, logs := range map[string]*regtest.Buffer{"region-asia": s.logs, "region-us": usLogs} {
		text := logs.String()
		if !strings.Contains(text, "signed URL refused") {
			t.Errorf("%s logged no refusal", name)
		}
		if strings.Contains(text, sig) || strings.Contains(text, flip(sig)) {
			t.Errorf("%s logged a signature:\n%s", name, text)
		}
	}

	// Replay after expiry: served while valid, refused after.
	if resp := send(t, http.MethodGet, valid.String()); resp.StatusCode != http.StatusOK || body(resp) != string(layer) {
		t.Fatalf("valid signed URL: %d", resp.StatusCode)
	}
	s.clock.Advance(DefaultSignatureTTL)
	if resp := send(t, http.MethodGet, valid.String()); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replay after expiry: %d, want 401", resp.StatusCode)
	} else if _, msg := oneError(t, body(resp)); !strings.Contains(msg, "expired") {
		t.Fatalf("replay after expiry: %q", msg)
	}
}

// TestTransparentSignatureScope: a signature never authorizes anything
// but its blob, and leaves nothing behind for a credential: after a signed
// pull, a request without credentials still gets the origin's challenge.
func TestTransparentSignatureScope(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	valid := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	cacheBase := valid.Scheme + "://" + valid.Host
	if resp := send(t, http.MethodGet, valid.String()); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed pull: %d", resp.StatusCode)
	}
	for name, u := range map[string]string{
		"the blob without signature":      cacheBase + s.blobPath,
		"the manifest with the signature": cacheBase + "/v2/" + s.img.Repo + "/manifests/" + s.img.Tag + "?" + valid.RawQuery,
		"the tags with the signature":     cacheBase + "/v2/" + s.img.Repo + "/tags/list?" + valid.RawQuery,
	} {
		resp := send(t, http.MethodGet, u)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: %d, WWW-Authenticate %q; want the origin's challenge", name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
	}
}

// TestOriginHonoursSignatures: the origin serves a blob GET or HEAD that
// carries its own signature for a cache it knows, without credentials, and
// only that blob.
func TestOriginHonoursSignatures(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	valid := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	at := func(path string, q url.Values) string { return s.og.URL + path + "?" + q.Encode() }
	q := valid.Query()
	layer := s.img.Layers[0]
	if resp := send(t, http.MethodGet, at(s.blobPath, q)); resp.StatusCode != http.StatusOK || body(resp) != string(layer) || resp.Header.Get("Docker-Content-Digest") != digestOf(layer) {
		t.Fatalf("signed GET at the origin: %d", resp.StatusCode)
	}
	if resp := send(t, http.MethodHead, at(s.blobPath, q)); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed HEAD at the origin: %d", resp.StatusCode)
	}
	unknown := originSigner(t).Sign(signature.Claims{Method: http.MethodGet, Repository: s.img.Repo, Digest: digestOf(layer), Expiry: s.clock.Now().Add(time.Minute), Cache: "nowhere"})
	altered := valid.Query()
	altered.Set(signature.ParamDigest, digestOf(s.img.Layers[1]))
	for name, u := range map[string]string{
		"another digest":   at("/v2/"+s.img.Repo+"/blobs/"+digestOf(s.img.Layers[1]), q),
		"altered":          at("/v2/"+s.img.Repo+"/blobs/"+digestOf(s.img.Layers[1]), altered),
		"an unknown cache": at(s.blobPath, unknown),
	} {
		resp := send(t, http.MethodGet, u)
		b := body(resp)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(b, string(s.img.Layers[1][:16])) {
			t.Fatalf("%s: %d, want 401", name, resp.StatusCode)
		}
		if code, _ := oneError(t, b); code != "UNAUTHORIZED" {
			t.Errorf("%s: code %s", name, code)
		}
	}
	// Anything but a blob is the usual flow: the challenge.
	resp := send(t, http.MethodGet, at("/v2/"+s.img.Repo+"/manifests/"+s.img.Tag, q))
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("signed manifest GET at the origin: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

// TestTransparentNoDecision: a signed pull, cold (the fill fetches with the
// signature) and warm, records no authorization decision for anyone.
func TestTransparentNoDecision(t *testing.T) {
	s := setupTransparent(t, regtest.HtpasswdAuth(t, testUsers), "")
	valid := signedURL(t, s.og, "alice", "alicepw", s.blobPath)
	for range 2 {
		if resp := send(t, http.MethodGet, valid.String()); resp.StatusCode != http.StatusOK {
			t.Fatalf("signed pull: %d", resp.StatusCode)
		}
	}
	families, err := s.cache.Cache.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "content_cache_authorization_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("decisions %v = %v after signed pulls, want 0", m.GetLabel(), v)
			}
		}
	}
}
