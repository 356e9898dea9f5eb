package upstream

import (
	"errors"
	"net/url"
	"strings"
)

// redactQuery drops the query from the URL a transport error names: the
// query of a signed request is a bearer token (a signature), and errors
// reach logs and clients' error messages.
func redactQuery(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if i := strings.IndexByte(ue.URL, '?'); i >= 0 {
			ue.URL = ue.URL[:i] + "?(query redacted)"
		}
	}
	return err
}
