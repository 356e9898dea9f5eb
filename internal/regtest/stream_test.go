package regtest

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A streamed blob is stored under the digest of the bytes it streamed, with
// htpasswd and with token auth.
func TestPushBlobStream(t *testing.T) {
	ts := NewTokenServer(t, testUsers, testACL)
	for name, base := range map[string]string{
		"htpasswd": newRegistry(t, HtpasswdAuth(t, testUsers), "filesystem"),
		"token":    newRegistry(t, ts.AuthConfig(), "filesystem"),
	} {
		t.Run(name, func(t *testing.T) {
			const size = 3<<20 + 17
			want, err := io.ReadAll(RandomStream(7, size))
			if err != nil || len(want) != size {
				t.Fatalf("RandomStream: %d bytes, %v", len(want), err)
			}
			c := &Client{Base: base, User: "alice", Pass: "alice-pw"}
			dgst, n, err := c.PushBlobStream(t.Context(), "stream/blob", RandomStream(7, size))
			if err != nil {
				t.Fatal(err)
			}
			if n != size || dgst != digest.FromBytes(want) {
				t.Fatalf("pushed %d bytes as %s, want %d as %s", n, dgst, size, digest.FromBytes(want))
			}
			resp, body := get(t, c, "/v2/stream/blob/blobs/"+dgst.String())
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
				t.Fatalf("GET blob: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
	other, _ := io.ReadAll(RandomStream(8, 64))
	same, _ := io.ReadAll(RandomStream(7, 64))
	again, _ := io.ReadAll(RandomStream(7, 64))
	if bytes.Equal(other, same) || !bytes.Equal(same, again) {
		t.Fatal("RandomStream: seeds must give distinct, reproducible streams")
	}
}
