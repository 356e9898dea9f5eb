package regtest

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"golang.org/x/crypto/bcrypt"
)

// HtpasswdAuth writes an htpasswd file for users and returns the registry
// auth section using it (realm "origin").
func HtpasswdAuth(t testing.TB, users map[string]string) configuration.Auth {
	t.Helper()
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)

	var b strings.Builder
	for _, u := range names {
		// MinCost: the registry runs bcrypt on every request, so the
		// default cost would only slow tests down.
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("regtest: bcrypt %q: %v", u, err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("regtest: write htpasswd: %v", err)
	}
	return configuration.Auth{"htpasswd": configuration.Parameters{
		"realm": "origin",
		"path":  path,
	}}
}
