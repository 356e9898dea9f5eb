package warm

import (
	"context"
	"fmt"

	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/content-cache/content-cache/downstream/internal/config"
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
	if u, p := getenv(EnvUsername), getenv(EnvPassword); u != "" && p != "" {
		cred := auth.Credential{Username: u, Password: p}
		return func(context.Context, string) (auth.Credential, error) { return cred, nil }, nil
	}
	var store *credentials.DynamicStore
	var err error
	if path != "" {
		if err := config.CheckDockerConfig(path); err != nil {
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
