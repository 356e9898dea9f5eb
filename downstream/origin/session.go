package origin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// SessionTTL is how long a sign-in to the web pages lasts: short, since
// the cookie stands for the user's password until then.
const SessionTTL = 30 * time.Minute

const (
	sessionCookie = "cc_session"
	signinCookie  = "cc_signin" // ties the sign-in form's CSRF token to this browser
	uiPath        = "/ui/"
)

// sessions signs and checks the web pages' cookies and CSRF tokens with a
// key derived from distribution's http.secret (shared by the replicas,
// as distribution's upload state is): a session made on one replica is
// good on another. Nothing is stored server-side.
type sessions struct {
	key []byte
	now func() time.Time
}

func newSessions(secret string, now func() time.Time) *sessions {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("content-cache/origin/ui/session/v1"))
	return &sessions{key: mac.Sum(nil), now: now}
}

// session is what the cookie holds: who, until when, and a random nonce
// that CSRF tokens are bound to.
type session struct {
	User   string `json:"u"`
	Expiry int64  `json:"e"`
	Nonce  string `json:"n"`
}

func (s *sessions) sign(parts ...string) string {
	mac := hmac.New(sha256.New, s.key)
	for _, p := range parts {
		mac.Write([]byte(p))
		mac.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func nonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// issue sets a new session cookie for user.
func (s *sessions) issue(w http.ResponseWriter, r *http.Request, user string) {
	sess := session{User: user, Expiry: s.now().Add(SessionTTL).Unix(), Nonce: nonce()}
	payload, _ := json.Marshal(sess)
	p := base64.RawURLEncoding.EncodeToString(payload)
	setCookie(w, r, sessionCookie, p+"."+s.sign("session", p), SessionTTL)
}

// current returns the request's valid session.
func (s *sessions) current(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	p, mac, ok := strings.Cut(c.Value, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(s.sign("session", p))) {
		return session{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return session{}, false
	}
	var sess session
	if json.Unmarshal(payload, &sess) != nil || sess.User == "" || sess.Nonce == "" || !s.now().Before(time.Unix(sess.Expiry, 0)) {
		return session{}, false
	}
	return sess, true
}

// csrf is the token every state-changing form of sess carries.
func (s *sessions) csrf(sess session) string { return s.sign("csrf", sess.Nonce) }

// signinToken is the sign-in form's CSRF token, bound to the browser's
// sign-in cookie (set here when missing): a login CSRF cannot sign a
// victim in as the attacker.
func (s *sessions) signinToken(w http.ResponseWriter, r *http.Request) string {
	n := ""
	if c, err := r.Cookie(signinCookie); err == nil && len(c.Value) == 32 {
		n = c.Value
	} else {
		n = nonce()
		setCookie(w, r, signinCookie, n, time.Hour)
	}
	return s.sign("signin", n)
}

var errCSRF = errors.New("the form's CSRF token is missing or wrong; reload the page and try again")

// checkSignin checks the sign-in form's token.
func (s *sessions) checkSignin(r *http.Request) error {
	c, err := r.Cookie(signinCookie)
	if err != nil || !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(s.sign("signin", c.Value))) {
		return errCSRF
	}
	return nil
}

// checkCSRF checks a state-changing form of sess.
func (s *sessions) checkCSRF(r *http.Request, sess session) error {
	if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(s.csrf(sess))) {
		return errCSRF
	}
	return nil
}

// end clears the session cookie.
func (s *sessions) end(w http.ResponseWriter, r *http.Request) {
	setCookie(w, r, sessionCookie, "", -1)
}

// setCookie sets a cookie of the pages: HttpOnly, SameSite=Strict, Secure
// under TLS, for /ui/ only.
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, ttl time.Duration) {
	c := &http.Cookie{
		Name: name, Value: value, Path: uiPath,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	}
	if ttl < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(ttl / time.Second)
	}
	http.SetCookie(w, c)
}
