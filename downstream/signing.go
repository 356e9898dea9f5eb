package downstream

import (
	"crypto/tls"
	"net/http"

	"github.com/content-cache/content-cache/downstream/internal/keyring"
	"github.com/sirupsen/logrus"
)

// newKeyring builds the keys signed URLs are verified with, or nil when
// the cache has no signing option. The key endpoint is fetched over TLS
// trusting what upstream TLS trusts (the cas option), without following
// redirects: the keys come from the URL configured, nowhere else.
func newKeyring(cfg Config, log *logrus.Entry) (*keyring.Keyring, error) {
	s := cfg.Signing
	if s == nil {
		return nil, nil
	}
	var client *http.Client
	if s.KeysURL != nil {
		roots, err := cfg.Roots()
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		client = &http.Client{
			Transport:     tr,
			Timeout:       cfg.DialTimeout + cfg.HeaderTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return keyring.New(s.PublicKeys, s.KeysURL, s.Refresh, client, log)
}
