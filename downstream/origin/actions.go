package origin

import (
	"context"
	"fmt"
	"net/http"
)

// The changes the API and the pages make, in one place: each checks its
// input before touching storage and returns an actionError saying what
// is wrong.

// actionError is a refused or failed change: the API writes it as
// distribution's error body, a page shows its message.
type actionError struct {
	status  int
	code    string
	message string
}

func (e *actionError) Error() string { return e.message }

func (e *actionError) write(w http.ResponseWriter) { writeError(w, e.status, e.code, e.message) }

func refuse(status int, code, format string, args ...any) *actionError {
	return &actionError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// createCache registers a cache (admins only; the caller checked).
func (o *Origin) createCache(ctx context.Context, name, host string) (Cache, *actionError) {
	c, err := NewCache(name, host)
	if err != nil {
		return Cache{}, refuse(http.StatusBadRequest, "INVALID_INPUT", "%s", err)
	}
	if _, exists := o.static(c.Name); exists {
		return Cache{}, refuse(http.StatusConflict, "CONFLICT", "content cache %q is defined in the configuration", c.Name)
	}
	if _, exists, err := o.store.cache(ctx, c.Name); err != nil {
		return Cache{}, refuse(http.StatusInternalServerError, "UNKNOWN", "%s", err)
	} else if exists {
		return Cache{}, refuse(http.StatusConflict, "CONFLICT", "content cache %q already exists", c.Name)
	}
	if err := o.store.putCache(ctx, c); err != nil {
		return Cache{}, refuse(http.StatusInternalServerError, "UNKNOWN", "%s", err)
	}
	o.mu.Lock()
	o.stored[c.Name] = c
	o.mu.Unlock()
	o.probeSoon()
	return c, nil
}

// removeCache deletes a cache created through the API (admins only).
func (o *Origin) removeCache(ctx context.Context, name string) *actionError {
	if _, exists := o.static(name); exists {
		return refuse(http.StatusConflict, "CONFLICT", "content cache %q is defined in the configuration; remove it there", name)
	}
	if !validCacheName(name) || reservedName(name) {
		return refuse(http.StatusNotFound, "NOT_FOUND", "no content cache named %q", name)
	}
	existed, err := o.store.deleteCache(ctx, name)
	if err != nil {
		return refuse(http.StatusInternalServerError, "UNKNOWN", "%s", err)
	}
	o.mu.Lock()
	delete(o.stored, name)
	delete(o.healthy, name)
	delete(o.probedAt, name)
	o.mu.Unlock()
	if !existed {
		return refuse(http.StatusNotFound, "NOT_FOUND", "no content cache named %q", name)
	}
	return nil
}

// setUserCache stores user's cache, "" for none (the user or an admin;
// the caller checked). The name is checked before any storage read: it
// becomes a path, and an answer must not depend on what else is stored.
func (o *Origin) setUserCache(ctx context.Context, user, name string) *actionError {
	if name != "" {
		if !validCacheName(name) || reservedName(name) {
			return refuse(http.StatusBadRequest, "INVALID_INPUT", "%q is not a valid cache name; expected %s", name, cacheNameHelp)
		}
		if _, known := o.knownCache(name); !known {
			// Another replica may have created it since the last refresh.
			if _, known, err := o.store.cache(ctx, name); err != nil || !known {
				return refuse(http.StatusBadRequest, "INVALID_INPUT", "no content cache named %q; expected one listed by GET %s", name, cachesPath)
			}
		}
	}
	if err := o.store.setSetting(ctx, user, name); err != nil {
		return refuse(http.StatusInternalServerError, "UNKNOWN", "%s", err)
	}
	return nil
}
