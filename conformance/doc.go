// Package conformance holds end-to-end tests that drive real registry
// clients (crane, regctl) against content-cache, checking that they pull
// through it with their own credentials and get exactly what the origin
// serves. The clients are pinned and installed by `make tools`; the tests
// skip without them unless CI is set.
package conformance
