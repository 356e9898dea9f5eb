// Package regtest holds test support for exercising content-cache against
// real, in-process distribution registries: a token server compatible with
// distribution's "token" auth, htpasswd configuration, and a tiny push/pull
// client built on net/http. It is a normal package so that tests in several
// packages can share it; nothing outside tests should import it.
package regtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ResourceActions is one entry of a token's "access" claim.
type ResourceActions struct {
	Type    string
	Name    string
	Actions []string
}

// TokenServer issues JWTs that distribution's token access controller
// accepts. Fields other than URL may be adjusted before the first request.
type TokenServer struct {
	// URL is the realm, e.g. http://localhost:PORT/token.
	URL     string
	Issuer  string
	Service string
	// Now is the clock used for iat/nbf/exp. Note that the registry checks
	// exp/nbf against its own wall clock (with 60s leeway), not this one.
	Now func() time.Time
	// Lifetime of tokens issued by the HTTP endpoint.
	Lifetime time.Duration

	users    map[string]string
	acl      func(user, repo string) []string
	signer   jose.Signer
	certPath string
	requests atomic.Int64
}

// NewTokenServer starts a token server. users maps username to password for
// Basic auth on the token endpoint; requests without credentials are served
// as user "". acl(user, repo) lists the actions user may have on repo; a
// token carries the intersection of that and the requested scope ("*" in the
// ACL grants everything requested).
func NewTokenServer(t testing.TB, users map[string]string, acl func(user, repo string) []string) *TokenServer {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("regtest: generate token key: %v", err)
	}
	certDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "regtest token signer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "regtest token signer"},
	}, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("regtest: create token cert: %v", err)
	}
	certPath := filepath.Join(t.TempDir(), "token-root.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o600); err != nil {
		t.Fatalf("regtest: write token cert: %v", err)
	}

	// The registry trusts "kid" only if it equals distribution's own
	// thumbprint of a root cert's key. That function does not left-pad EC
	// coordinates (unlike RFC 7638 / go-jose's Thumbprint), so use it
	// rather than computing the thumbprint ourselves.
	kid := token.GetJWKThumbprint(&key.PublicKey)
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid),
	)
	if err != nil {
		t.Fatalf("regtest: new signer: %v", err)
	}

	s := &TokenServer{
		Issuer:   "regtest-issuer",
		Service:  "regtest-registry",
		Now:      time.Now,
		Lifetime: 5 * time.Minute,
		users:    users,
		acl:      acl,
		signer:   signer,
		certPath: certPath,
	}
	srv := httptest.NewServer(http.HandlerFunc(s.serveToken))
	t.Cleanup(srv.Close)

	// Same listener, but named "localhost": crane (go-containerregistry)
	// refuses realms whose host is an IP literal.
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("regtest: token server address: %v", err)
	}
	s.URL = "http://localhost:" + port + "/token"
	return s
}

// AuthConfig returns the registry's auth section trusting this server.
func (s *TokenServer) AuthConfig() configuration.Auth {
	return configuration.Auth{"token": configuration.Parameters{
		"realm":          s.URL,
		"service":        s.Service,
		"issuer":         s.Issuer,
		"rootcertbundle": s.certPath,
	}}
}

// Requests reports how many token requests the server has received,
// letting tests check that clients reuse tokens.
func (s *TokenServer) Requests() int64 { return s.requests.Load() }

// Mint returns a signed token for user granting access, valid for lifetime
// from s.Now(). A negative lifetime yields a token that is already expired
// even after the registry's 60s clock-skew leeway (token.Leeway), which is
// subtracted as well so that "expired" holds for any verifier.
func (s *TokenServer) Mint(user string, access []ResourceActions, lifetime time.Duration) string {
	now := s.Now()
	exp := now.Add(lifetime)
	nbf := now
	if lifetime < 0 {
		exp = exp.Add(-token.Leeway)
		nbf = exp.Add(-time.Minute)
	}
	return s.sign(user, access, now, nbf, exp)
}

// MintExpiring returns a token that the registry accepts for about validFor
// more (wall-clock) time and refuses after: its expiry is set back by the
// registry's leeway. It is how a test revokes a token at the origin.
func (s *TokenServer) MintExpiring(user string, access []ResourceActions, validFor time.Duration) string {
	now := time.Now()
	return s.sign(user, access, now, now.Add(-time.Minute), now.Add(validFor-token.Leeway))
}

func (s *TokenServer) sign(user string, access []ResourceActions, now, nbf, exp time.Time) string {
	claims := token.ClaimSet{
		Issuer:     s.Issuer,
		Subject:    user,
		Audience:   token.AudienceList{s.Service},
		Expiration: exp.Unix(),
		NotBefore:  nbf.Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      randomHex(16),
		Access:     make([]*token.ResourceActions, 0, len(access)),
	}
	for _, a := range access {
		actions := a.Actions
		if actions == nil {
			actions = []string{} // distribution's own servers never emit null
		}
		claims.Access = append(claims.Access, &token.ResourceActions{Type: a.Type, Name: a.Name, Actions: actions})
	}
	raw, err := jwt.Signed(s.signer).Claims(claims).Serialize()
	if err != nil {
		// Signing with an in-memory ECDSA key cannot fail short of a bug.
		panic(fmt.Sprintf("regtest: sign token: %v", err))
	}
	return raw
}

// serveToken implements the Docker token protocol: GET with optional Basic
// auth, plus the OAuth2 password grant (POST form) some clients use.
func (s *TokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)

	var (
		user, pass string
		hasCreds   bool
		scopes     []string
	)
	switch r.Method {
	case http.MethodGet:
		user, pass, hasCreds = r.BasicAuth()
		scopes = r.URL.Query()["scope"]
	case http.MethodPost:
		if err := r.ParseForm(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if gt := r.PostForm.Get("grant_type"); gt != "password" {
			http.Error(w, fmt.Sprintf("unsupported grant_type %q", gt), http.StatusBadRequest)
			return
		}
		user, pass, hasCreds = r.PostForm.Get("username"), r.PostForm.Get("password"), true
		scopes = r.PostForm["scope"]
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	if hasCreds {
		want, ok := s.users[user]
		if !ok || subtle.ConstantTimeCompare([]byte(want), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="regtest-token"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}`, http.StatusUnauthorized)
			return
		}
	} else {
		user = ""
	}

	access, err := s.grant(user, scopes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := s.Now()
	tok := s.Mint(user, access, s.Lifetime)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":        tok,
		"access_token": tok,
		"expires_in":   int(s.Lifetime / time.Second),
		"issued_at":    now.UTC().Format(time.RFC3339),
	})
}

// grant resolves requested scopes ("type:name:a,b", possibly several per
// value separated by spaces) against the ACL. Only "repository" resources
// are ever granted; anything else is silently dropped like real servers do.
func (s *TokenServer) grant(user string, scopeParams []string) ([]ResourceActions, error) {
	var out []ResourceActions
	index := map[[2]string]int{}
	for _, param := range scopeParams {
		for _, scope := range strings.Fields(param) {
			typ, rest, ok1 := strings.Cut(scope, ":")
			i := strings.LastIndex(rest, ":")
			if !ok1 || i <= 0 {
				return nil, fmt.Errorf("malformed scope %q", scope)
			}
			name, actions := rest[:i], strings.Split(rest[i+1:], ",")
			if typ != "repository" || s.acl == nil {
				continue
			}
			allowed := s.acl(user, name)
			var granted []string
			for _, a := range actions {
				if a != "" && (slices.Contains(allowed, "*") || slices.Contains(allowed, a)) {
					granted = append(granted, a)
				}
			}
			if len(granted) == 0 {
				continue
			}
			k := [2]string{typ, name}
			if j, ok := index[k]; ok {
				for _, a := range granted {
					if !slices.Contains(out[j].Actions, a) {
						out[j].Actions = append(out[j].Actions, a)
					}
				}
				continue
			}
			index[k] = len(out)
			out = append(out, ResourceActions{Type: typ, Name: name, Actions: granted})
		}
	}
	return out, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
