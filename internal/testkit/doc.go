// Package testkit holds test helpers that import nothing of content-cache:
// a clock tests move by hand, a certificate authority and free ports for
// the processes tests start. Tests inside the
// cache's own packages use it without an import cycle; regtest (which
// imports downstream) re-exports it.
package testkit
