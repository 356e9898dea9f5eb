package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
)

// authConfig is what sign-in needs of the origin's auth section.
type authConfig struct {
	ac auth.AccessController // nil: no auth section, nobody can sign in
	// kind is the auth section's type ("htpasswd", "token", ...).
	kind string
	// realm and service of token auth, where a password is exchanged for
	// a token as `docker login` does.
	realm, service string
}

var errBadCredentials = errors.New("wrong user name or password")

// checkPassword returns who user is if pass is theirs, asking the
// origin's own access controller: with htpasswd it checks the password
// directly (as Basic credentials); with token auth the password is first
// exchanged for a token at the realm, and the controller checks the token.
func (o *Origin) checkPassword(ctx context.Context, a authConfig, user, pass string) (identity, error) {
	if a.ac == nil {
		return identity{}, errors.New("the origin has no auth section; nobody can sign in")
	}
	if user == "" || pass == "" {
		return identity{}, errBadCredentials
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "/v2/", nil)
	if err != nil {
		return identity{}, err
	}
	if a.kind == "token" {
		tok, err := o.exchange(ctx, a, user, pass)
		if err != nil {
			return identity{}, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	} else {
		req.SetBasicAuth(user, pass)
	}
	grant, err := a.ac.Authorized(req)
	if err != nil || grant == nil || grant.User.Name == "" {
		return identity{}, errBadCredentials
	}
	return o.identityOf(grant.User.Name), nil
}

// exchange asks the token realm for a token with user's password, with no
// scope: the token only says who the user is.
func (o *Origin) exchange(ctx context.Context, a authConfig, user, pass string) (string, error) {
	u, err := url.Parse(a.realm)
	if err != nil {
		return "", fmt.Errorf("the token realm %q is not a URL", a.realm)
	}
	q := u.Query()
	q.Set("service", a.service)
	q.Set("account", user)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(user, pass)
	client := &http.Client{Transport: o.client.Transport}
	resp, err := client.Do(req)
	if err != nil {
		o.log.WithError(err).Warn("sign-in: the token realm did not answer")
		return "", errors.New("the token service did not answer; try again later")
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		return "", errBadCredentials
	}
	if resp.StatusCode != http.StatusOK {
		o.log.WithField("status", resp.StatusCode).Warn("sign-in: the token realm refused")
		return "", fmt.Errorf("the token service answered %d; try again later", resp.StatusCode)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", errors.New("the token service's answer is not a token")
	}
	if body.Token != "" {
		return body.Token, nil
	}
	if body.AccessToken != "" {
		return body.AccessToken, nil
	}
	return "", errors.New("the token service's answer holds no token")
}
