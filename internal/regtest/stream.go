package regtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// PushBlobStream uploads a blob of unknown digest from r to repo in one
// streamed PATCH, hashing it on the way, and commits it with the final PUT.
// Nothing is held in memory, so it suits blobs of several GiB. It returns
// the blob's digest and size.
func (c *Client) PushBlobStream(ctx context.Context, repo string, r io.Reader) (digest.Digest, int64, error) {
	resp, err := c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if err != nil {
		return "", 0, err
	}
	if _, err := readExpect(resp, http.StatusAccepted); err != nil {
		return "", 0, err
	}
	loc, err := c.resolve(resp.Header.Get("Location"))
	if err != nil {
		return "", 0, fmt.Errorf("regtest: upload location: %w", err)
	}

	digester := digest.Canonical.Digester()
	counter := &countingReader{r: io.TeeReader(r, digester.Hash())}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc.String(), counter)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	// The POST answered any challenge: reuse its credentials.
	if authz := c.cachedAuth(requestClass(http.MethodPost, loc.Path)); authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err = c.httpClient().Do(req)
	if err != nil {
		return "", 0, err
	}
	if _, err := readExpect(resp, http.StatusAccepted); err != nil {
		return "", 0, err
	}
	if loc, err = c.resolve(resp.Header.Get("Location")); err != nil {
		return "", 0, fmt.Errorf("regtest: upload location: %w", err)
	}

	dgst := digester.Digest()
	q := loc.Query()
	q.Set("digest", dgst.String())
	loc.RawQuery = q.Encode()
	resp, err = c.do(ctx, http.MethodPut, loc.String(), nil, nil)
	if err != nil {
		return "", 0, err
	}
	if _, err := readExpect(resp, http.StatusCreated); err != nil {
		return "", 0, err
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dgst.String() {
		return "", 0, fmt.Errorf("regtest: registry stored blob as %s, expected %s", got, dgst)
	}
	return dgst, counter.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// RandomStream returns size pseudo-random bytes generated from seed as they
// are read (ChaCha8: fast, and the same seed always gives the same bytes),
// for blobs too large to hold in memory.
func RandomStream(seed uint64, size int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	return io.LimitReader(rand.NewChaCha8(key), size)
}
