// Package conformance holds end-to-end tests that drive real registry
// clients (crane, regctl, oras, skopeo, containerd's ctr, and a private
// dockerd driven by the docker CLI) against content-cache, checking that
// they pull through it with their own credentials and get exactly what the
// origin serves. crane, regctl and oras are pinned and installed by `make
// tools`, skopeo, containerd and docker.io come from Debian packages; the
// tests skip a missing client (or dockerd without root) unless CI is set.
//
// TestOCIConformance runs the OCI distribution-spec conformance program
// against an origin, a cache and a chain of two caches; `make conformance`
// builds the program and runs it.
package conformance
