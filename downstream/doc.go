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
// The package is split by concern, one file each: config.go (options),
// register.go (wiring into distribution), cache.go (the instance and its
// routing), ns.go (the ns parameter), access.go and decisions.go (the
// authorization rules and the decision cache), upstream.go (the upstream
// pool), blobs.go and fill.go (blob serving and coalesced, verified fills),
// serve.go (hits from storage), manifests.go, forward.go (requests passed
// through), readonly.go, layout.go (distribution's storage layout),
// pulls.go, expiry.go and inuse.go (expiry), health.go, metrics.go, log.go
// and errors.go.
package downstream
