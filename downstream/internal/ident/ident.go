// Package ident names what the cache caches and authorizes: a repository
// of one origin. Decisions, fills, pull records and links all speak of
// repositories this way, so that serving several registries (the ns
// parameter) adds origins without changing what each concern keys on.
package ident

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// Repo is a repository of one origin. Build it with Of or At; the zero
// value names nothing.
type Repo struct {
	origin string          // "" for the configured origin
	name   reference.Named // its name at its origin
	stored reference.Named // its name in local storage
}

// Key is a Repo as a comparable value, for maps.
type Key struct {
	Origin string
	Name   string
}

// Of is a repository of the configured origin. Its content is stored under
// its own name, as distribution stores it: storage written by a cache of
// one origin, before origins had names, is read as it is, with no
// migration.
func Of(name reference.Named) Repo { return Repo{name: name, stored: name} }

// At is a repository of another origin (host[:port]), stored under
// "<Prefix(origin)>/<name>" so that two origins' repositories of one name
// never meet in storage.
func At(origin string, name reference.Named) (Repo, error) {
	if origin == "" {
		return Of(name), nil
	}
	stored, err := reference.WithName(Prefix(origin) + "/" + name.Name())
	if err != nil {
		return Repo{}, fmt.Errorf("repository %s of %s cannot be stored: %w", name.Name(), origin, err)
	}
	return Repo{origin: origin, name: name, stored: stored}, nil
}

// Prefix is the first component of the stored names of origin's
// repositories: the origin, its port after "_" rather than ":", which
// storage drivers refuse in a path (registry.example.com:5000 is stored
// as registry.example.com_5000/...). A host name holds no "_", so no two
// origins share a prefix.
func Prefix(origin string) string { return strings.ReplaceAll(origin, ":", "_") }

// Origin is the origin's host[:port]; "" for the configured origin.
func (r Repo) Origin() string { return r.origin }

// Name is the repository's name at its origin: what upstream requests ask.
func (r Repo) Name() string { return r.name.Name() }

// Named is Name as distribution's reference.
func (r Repo) Named() reference.Named { return r.name }

// Stored is the repository that holds its content in local storage.
func (r Repo) Stored() reference.Named { return r.stored }

// Key is r as a map key.
func (r Repo) Key() Key { return Key{Origin: r.origin, Name: r.name.Name()} }

// String names r for logs: origin/name, or name for the configured origin.
func (r Repo) String() string { return r.stored.Name() }
