package regtest

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"golang.org/x/crypto/bcrypt"
)

// HtpasswdAuth writes an htpasswd file for users and returns the registry
// auth section using it (realm "origin").
func HtpasswdAuth(t testing.TB, users map[string]string) configuration.Auth {
	t.Helper()
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, path, users)
	return configuration.Auth{"htpasswd": configuration.Parameters{
		"realm": "origin",
		"path":  path,
	}}
}

// SetHtpasswd replaces the users of an auth section from HtpasswdAuth. The
// registry reloads the file when its modification time changes, which this
// moves forward: removing a user revokes it at once.
func SetHtpasswd(t testing.TB, auth configuration.Auth, users map[string]string) {
	t.Helper()
	path, _ := auth["htpasswd"]["path"].(string)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("regtest: htpasswd file: %v", err)
	}
	writeHtpasswd(t, path, users)
	mtime := fi.ModTime().Add(time.Second)
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatalf("regtest: htpasswd mtime: %v", err)
	}
}

func writeHtpasswd(t testing.TB, path string, users map[string]string) {
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
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("regtest: write htpasswd: %v", err)
	}
}
