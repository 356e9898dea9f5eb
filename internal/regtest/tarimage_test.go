package regtest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestTarImage checks TarImage and DockerTarImage are deterministic, that
// their layers are gzip'd tars whose uncompressed digests are the config's
// diff IDs, and that the manifest describes config and layers with the
// format's media types.
func TestTarImage(t *testing.T) {
	for _, tc := range []struct {
		name                string
		build               func(int64, int) Image
		manifest, cfg, layr string
	}{
		{"oci", TarImage, v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, v1.MediaTypeImageLayerGzip},
		{"docker", DockerTarImage, MediaTypeDockerManifest, MediaTypeDockerConfig, MediaTypeDockerLayer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.build(7, 3)
			again := tc.build(7, 3)
			if img.Digest != again.Digest || !bytes.Equal(img.Layers[2], again.Layers[2]) {
				t.Errorf("the same seed gave %s and %s", img.Digest, again.Digest)
			}
			if other := tc.build(8, 3); other.Digest == img.Digest {
				t.Errorf("seeds 7 and 8 gave the same image %s", img.Digest)
			}
			if img.MediaType != tc.manifest || digest.FromBytes(img.Manifest) != img.Digest {
				t.Errorf("media type %q, digest %s: want %q and the manifest's digest", img.MediaType, img.Digest, tc.manifest)
			}
			var m v1.Manifest
			if err := json.Unmarshal(img.Manifest, &m); err != nil {
				t.Fatal(err)
			}
			var cfg v1.Image
			if err := json.Unmarshal(img.Config, &cfg); err != nil {
				t.Fatal(err)
			}
			if m.MediaType != tc.manifest || m.Config.MediaType != tc.cfg || m.Config.Digest != digest.FromBytes(img.Config) {
				t.Errorf("manifest %s, config descriptor %+v", m.MediaType, m.Config)
			}
			if len(m.Layers) != 3 || len(img.Layers) != 3 || len(cfg.RootFS.DiffIDs) != 3 {
				t.Fatalf("%d layer descriptors, %d layers, %d diff IDs, want 3 each", len(m.Layers), len(img.Layers), len(cfg.RootFS.DiffIDs))
			}
			for i, l := range img.Layers {
				if d := m.Layers[i]; d.MediaType != tc.layr || d.Digest != digest.FromBytes(l) || d.Size != int64(len(l)) {
					t.Errorf("layer %d: descriptor %+v", i, d)
				}
				zr, err := gzip.NewReader(bytes.NewReader(l))
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				plain, err := io.ReadAll(zr)
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				if digest.FromBytes(plain) != cfg.RootFS.DiffIDs[i] {
					t.Errorf("layer %d: uncompressed digest %s, config says %s", i, digest.FromBytes(plain), cfg.RootFS.DiffIDs[i])
				}
				if b, err := LayerFile(l, fmt.Sprintf("cc/layer-%d/file-2", i)); err != nil || len(b) < 512 {
					t.Errorf("layer %d: file-2: %d bytes, %v", i, len(b), err)
				}
			}
			if b, err := LayerFile(img.Layers[0], "cc/seed"); err != nil || string(b) != "7\n" {
				t.Errorf("cc/seed: %q, %v", b, err)
			}
		})
	}
}
