package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"

	"github.com/content-cache/content-cache/internal/testkit"
)

// tlsFiles are the PEM files of a -tls run: a CA made at start, and one
// certificate for 127.0.0.1 signed by it that every registry serves (the
// port does not matter to a certificate, so the shaper passes it through).
type tlsFiles struct {
	ca, cert, key string
	pool          *x509.CertPool
}

// newTLSFiles writes a fresh CA and a server certificate for 127.0.0.1
// into dir (testkit's: ECDSA P-256 keys, what a deployment would use, and
// cheap handshakes, so the TLS rows measure the record layer).
func newTLSFiles(dir string) (*tlsFiles, error) {
	ca, err := testkit.NewCAIn(dir)
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.ServerFilesIn(dir)
	if err != nil {
		return nil, err
	}
	return &tlsFiles{ca: ca.File, cert: cert, key: key, pool: ca.Pool}, nil
}

// useTLS makes the harness's client trust the CA. With h2, HTTP/2 is
// attempted as Go's default transport (and so crane, docker and
// containerd) would: a custom TLS configuration otherwise turns it off.
func (f *tlsFiles) useTLS(c *http.Client, h2 bool) {
	t := c.Transport.(*http.Transport)
	t.TLSClientConfig = &tls.Config{RootCAs: f.pool}
	t.ForceAttemptHTTP2 = h2
}
