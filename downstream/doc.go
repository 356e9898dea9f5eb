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
// Challenges from the origin reach the client unchanged. A blob request
// redirected by a transparent origin (see the origin package) is instead
// authorized by the origin's signature in its URL, for that blob only
// (Config.Signing).
//
// This package is the thin public entry (registration, Wrap, New, Options,
// Config, health checks). Each concern lives in a package of its own under
// internal/: config (options), upstream (the upstream pool), access (the
// authorization flow and decisions), store (distribution's storage layout),
// fill (coalesced, verified fills), expiry (pull records, sweeper, in-use
// guard), httpapi (router, handlers, errors, request log, signed URLs),
// signature (the signed URL format), keyring (the origin's public keys)
// and metrics.
package downstream
