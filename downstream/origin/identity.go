package origin

import (
	"net/http"
	"slices"

	"github.com/distribution/distribution/v3/registry/auth"
)

// identity is who an API request comes from, per the origin's own auth.
type identity struct {
	user  string
	admin bool
}

// authenticate asks the origin's access controller who sent r, with no
// access records: the answer is a user name, not a permission. A
// challenge is written as the app would (401 with its WWW-Authenticate).
// Without an auth section nobody can be identified, so the API refuses.
func (o *Origin) authenticate(ac auth.AccessController, w http.ResponseWriter, r *http.Request) (identity, bool) {
	if ac == nil {
		writeError(w, http.StatusForbidden, "DENIED", "the origin has no auth section; the content cache API needs one to identify users and admins")
		return identity{}, false
	}
	grant, err := ac.Authorized(r)
	if err != nil {
		if ch, ok := err.(auth.Challenge); ok {
			ch.SetHeaders(r, w)
		}
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return identity{}, false
	}
	if grant == nil || grant.User.Name == "" {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return identity{}, false
	}
	return o.identityOf(grant.User.Name), true
}

func (o *Origin) identityOf(user string) identity {
	return identity{user: user, admin: slices.Contains(o.cfg.Admins, user)}
}
