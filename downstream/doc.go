// Package downstream is the content-cache registry middleware.
//
// Importing the package registers, with distribution:
//   - the registry middleware "downstream", which parses and validates its
//     options once (see ParseOptions) and hands the app a namespace that
//     refuses every direct use, so no write can reach local storage through
//     the app;
//   - an HTTP handler middleware (registry.RegisterHandler) that serves the
//     /v2/ API as a read-only pull-through cache of the configured upstreams.
//
// The origin keeps the last word on who may pull what: every request is
// authorized upstream with the client's own credentials, or by a recent
// "allowed" answer for the same credential and repository (Config.AuthTTL).
// Challenges from the origin reach the client unchanged.
//
// The package is split by concern: config.go (options), register.go
// (wiring into distribution), cache.go (routing), upstream.go (HTTP client),
// decisions.go (authorization decision cache), blobs.go and fill.go (blob
// serving and coalesced, verified fills), manifests.go, forward.go (requests
// passed through verbatim), readonly.go and log.go.
package downstream
