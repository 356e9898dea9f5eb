package regtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Pull fetches repo:ref (a tag or a digest) as a client pulling an image
// does: the manifest, then the config and every layer, one after the
// other, each verified against its digest. It returns the bytes of blobs
// received. Any status but 200, a short body or a wrong digest is an
// error: a pull that would fail a real client fails here.
func (c *Client) Pull(ctx context.Context, repo, ref string) (int64, error) {
	hdr := http.Header{"Accept": {v1.MediaTypeImageManifest}}
	resp, err := c.Do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, hdr)
	if err != nil {
		return 0, err
	}
	body, err := readExpect(resp, http.StatusOK)
	if err != nil {
		return 0, err
	}
	if d, err := digest.Parse(ref); err == nil && d.Algorithm().FromBytes(body) != d {
		return 0, fmt.Errorf("manifest %s: got %d bytes of digest %s", d, len(body), d.Algorithm().FromBytes(body))
	}
	var m v1.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, fmt.Errorf("manifest %s:%s: %w", repo, ref, err)
	}
	var total int64
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		n, err := c.PullBlob(ctx, repo, desc.Digest)
		if err != nil {
			return total, err
		}
		if n != desc.Size {
			return total, fmt.Errorf("blob %s: %d bytes, the manifest says %d", desc.Digest, n, desc.Size)
		}
		total += n
	}
	return total, nil
}

// PullBlob fetches one blob of repo and verifies it against dgst; it
// returns the bytes received.
func (c *Client) PullBlob(ctx context.Context, repo string, dgst digest.Digest) (int64, error) {
	resp, err := c.Do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+dgst.String(), nil)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		_, err := readExpect(resp, http.StatusOK)
		return 0, err
	}
	defer resp.Body.Close()
	v := dgst.Verifier()
	n, err := io.Copy(v, resp.Body)
	if err != nil {
		return n, fmt.Errorf("blob %s: after %d bytes: %w", dgst, n, err)
	}
	if !v.Verified() {
		return n, fmt.Errorf("blob %s: %d bytes that do not match the digest", dgst, n)
	}
	return n, nil
}
