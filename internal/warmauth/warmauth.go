// Package warmauth is the registry client of warm runs (docs/warming.md):
// oras-go's authenticating client (Basic and token flows) with the
// credentials of a Docker config file or the environment. The downstream
// middleware takes it as Options.WarmClient, so that the middleware itself
// adds no dependency to distribution's (downstream's depcheck test); the
// binary passes it.
package warmauth

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/content-cache/content-cache/downstream"
)

// Environment variables that give one credential for every registry a run
// names, for programs that hold no Docker config file. Never a flag: a
// password on a command line is visible to every user of the host.
const (
	EnvUsername = "CONTENT_CACHE_USERNAME"
	EnvPassword = "CONTENT_CACHE_PASSWORD"
)

// Credentials returns what a run pulls with:
//   - the environment's EnvUsername and EnvPassword when both are set, for
//     every registry;
//   - else the Docker config file at path (its auths, credsStore and
//     credHelpers, as docker login writes them);
//   - else, with no path, the Docker config of DOCKER_CONFIG
//     (DOCKER_CONFIG/config.json) or ~/.docker/config.json, if any.
//
// getenv reads the environment (os.Getenv).
func Credentials(path string, getenv func(string) string) (auth.CredentialFunc, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if u, p := getenv(EnvUsername), getenv(EnvPassword); u != "" && p != "" {
		cred := auth.Credential{Username: u, Password: p}
		return func(context.Context, string) (auth.Credential, error) { return cred, nil }, nil
	}
	var store *credentials.DynamicStore
	var err error
	if path != "" {
		if err := downstream.CheckDockerConfig(path); err != nil {
			return nil, err
		}
		store, err = credentials.NewStore(path, credentials.StoreOptions{})
	} else {
		store, err = credentials.NewStoreFromDocker(credentials.StoreOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("reading the Docker config file: %v", err)
	}
	return credentials.Credential(store), nil
}

// New is a downstream.WarmClient: an authenticating client over base (the
// client whose transport reaches the cache) with the credentials
// Credentials finds, and a token cache for the run.
func New(base *http.Client, credentialsFile string, getenv func(string) string) (downstream.WarmDoer, error) {
	creds, err := Credentials(credentialsFile, getenv)
	if err != nil {
		return nil, err
	}
	return &auth.Client{
		Client:     base,
		Credential: creds,
		Cache:      auth.NewCache(), // tokens reused across the run
		// The realms are those of the registries the cache is configured
		// for, which the operator chose: loopback and private addresses
		// are theirs too (an empty list blocks none).
		BlockedRealmPrefixes: []netip.Prefix{},
	}, nil
}

var _ downstream.WarmClient = New
