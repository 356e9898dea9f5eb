package origin

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
)

// storeRoot is where the origin keeps caches and user settings, in the
// registry's own storage driver: beside distribution's /docker tree, so
// that every origin replica over the same storage shares them and they
// survive restarts.
const storeRoot = "/content-cache/v1/origin"

// store persists caches (one file each, caches/<name>.json) and user
// settings (accounts/<base64url(user)>.json). One file per item, so that
// two replicas writing different items never overwrite each other.
type store struct {
	driver storagedriver.StorageDriver
}

// accountSettings is one user's stored settings.
type accountSettings struct {
	Username     string `json:"username"`
	ContentCache string `json:"contentCache"`
}

func cachePath(name string) string { return path.Join(storeRoot, "caches", name+".json") }

// accountPath encodes the user name: names may hold characters a storage
// path may not.
func accountPath(user string) string {
	return path.Join(storeRoot, "accounts", base64.RawURLEncoding.EncodeToString([]byte(user))+".json")
}

func notFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// caches lists the stored caches, sorted by name.
func (s *store) caches(ctx context.Context) ([]Cache, error) {
	dir := path.Join(storeRoot, "caches")
	files, err := s.driver.List(ctx, dir)
	if notFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	sort.Strings(files)
	out := make([]Cache, 0, len(files))
	for _, f := range files {
		if !strings.HasSuffix(f, ".json") {
			continue
		}
		c, ok, err := s.cache(ctx, strings.TrimSuffix(path.Base(f), ".json"))
		if err != nil {
			return nil, err
		}
		if ok { // deleted by another replica since the listing
			out = append(out, c)
		}
	}
	return out, nil
}

func (s *store) cache(ctx context.Context, name string) (Cache, bool, error) {
	if !validCacheName(name) {
		return Cache{}, false, nil // never a path outside caches/
	}
	var c Cache
	ok, err := s.get(ctx, cachePath(name), &c)
	return c, ok, err
}

func (s *store) putCache(ctx context.Context, c Cache) error {
	return s.put(ctx, cachePath(c.Name), c)
}

// deleteCache reports whether the cache existed.
func (s *store) deleteCache(ctx context.Context, name string) (bool, error) {
	if !validCacheName(name) {
		return false, nil // never a path outside caches/
	}
	err := s.driver.Delete(ctx, cachePath(name))
	if notFound(err) {
		return false, nil
	}
	return err == nil, err
}

// setting returns the user's stored cache name ("" when none).
func (s *store) setting(ctx context.Context, user string) (string, error) {
	var a accountSettings
	if _, err := s.get(ctx, accountPath(user), &a); err != nil {
		return "", err
	}
	return a.ContentCache, nil
}

// setSetting stores the user's cache; "" removes the setting.
func (s *store) setSetting(ctx context.Context, user, cache string) error {
	if cache == "" {
		err := s.driver.Delete(ctx, accountPath(user))
		if notFound(err) {
			return nil
		}
		return err
	}
	return s.put(ctx, accountPath(user), accountSettings{Username: user, ContentCache: cache})
}

func (s *store) get(ctx context.Context, p string, v any) (bool, error) {
	b, err := s.driver.GetContent(ctx, p)
	if notFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", p, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("reading %s: %w", p, err)
	}
	return true, nil
}

func (s *store) put(ctx context.Context, p string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.driver.PutContent(ctx, p, b); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}
