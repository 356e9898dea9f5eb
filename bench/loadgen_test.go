package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/internal/regtest"
)

// imageServer serves img's manifest by tag and its blobs by digest, with
// the layer bodies passed through corrupt.
func imageServer(t *testing.T, img regtest.Image, corrupt func([]byte) []byte) string {
	blobs := map[string][]byte{blobPath(img.Repo, digest.FromBytes(img.Config)): img.Config}
	for _, l := range img.Layers {
		blobs[blobPath(img.Repo, digest.FromBytes(l))] = corrupt(l)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/"+img.Repo+"/manifests/"+img.Tag {
			w.Header().Set("Content-Type", img.MediaType)
			_, _ = w.Write(img.Manifest)
			return
		}
		b, ok := blobs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestPullImage(t *testing.T) {
	img := regtest.RandomImage(1, 4, 1000)
	img.Repo, img.Tag = "bench/x", "t"
	want := int64(len(img.Config) + 4*1000)
	same := func(b []byte) []byte { return b }
	flip := func(b []byte) []byte { c := append([]byte(nil), b...); c[len(c)/2] ^= 1; return c }
	cut := func(b []byte) []byte { return b[:len(b)-1] }
	for _, tc := range []struct {
		name    string
		corrupt func([]byte) []byte
		verify  bool
		err     string // "" : the pull succeeds
	}{
		{"good body, verified", same, true, ""},
		{"good body, length only", same, false, ""},
		{"wrong body, verified", flip, true, "does not match its digest"},
		{"wrong body, length only", flip, false, ""}, // what the sample of verified clients is for
		{"short body", cut, false, "999 bytes, want 1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := imageServer(t, img, tc.corrupt)
			st, err := pullImage(t.Context(), newHTTPClient(), base, img.Repo, img.Tag, pullJobs, tc.verify)
			if tc.err == "" {
				if err != nil || st.bytes != want {
					t.Fatalf("pullImage = %d, %v; want %d bytes, no error", st.bytes, err, want)
				}
				if !(0 < st.manifest && st.manifest <= st.config && st.config <= st.firstByte && st.firstByte <= st.lastStart) {
					t.Fatalf("phases out of order: %+v", st)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("pullImage = %d, %v; want an error with %q", st.bytes, err, tc.err)
			}
		})
	}
}
