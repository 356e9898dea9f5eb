package regtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker image manifest v2 schema 2 media types, for images real Docker
// engines pull as their own format.
const (
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerConfig   = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

// tarEpoch is the modification time of every entry of a TarImage layer.
var tarEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// TarImage builds an OCI image that real engines (dockerd, containerd) can
// unpack: each of layers layers is a gzip'd tar holding a directory
// cc/layer-N/ with three small files of seeded random bytes
// (cc/layer-N/file-0 .. file-2), and layer 0 also holds cc/seed with the
// seed in decimal. The same seed always yields the same image, byte for
// byte. The config names linux and the running architecture, and lists
// the diff IDs (digests of the uncompressed tars) engines check. Repo and
// Tag default to "regtest/tar" and "latest".
func TarImage(seed int64, layers int) Image {
	return tarImage(seed, layers, v1.MediaTypeImageManifest, v1.MediaTypeImageConfig, v1.MediaTypeImageLayerGzip)
}

// DockerTarImage is TarImage with the Docker v2 schema 2 media types for
// the manifest, config and layers.
func DockerTarImage(seed int64, layers int) Image {
	return tarImage(seed, layers, MediaTypeDockerManifest, MediaTypeDockerConfig, MediaTypeDockerLayer)
}

func tarImage(seed int64, layers int, manifestType, configType, layerType string) Image {
	r := rand.New(rand.NewSource(seed))
	img := Image{Repo: "regtest/tar", Tag: "latest", MediaType: manifestType}
	descs := make([]v1.Descriptor, 0, layers)
	diffIDs := make([]digest.Digest, 0, layers)
	for i := range layers {
		files := []tarFile{{name: "cc/", dir: true}, {name: fmt.Sprintf("cc/layer-%d/", i), dir: true}}
		if i == 0 {
			files = append(files, tarFile{name: "cc/seed", data: []byte(strconv.FormatInt(seed, 10) + "\n")})
		}
		for j := range 3 {
			b := make([]byte, 512+r.Intn(3584))
			_, _ = r.Read(b) // never fails
			files = append(files, tarFile{name: fmt.Sprintf("cc/layer-%d/file-%d", i, j), data: b})
		}
		plain := tarOf(files)
		gz := gzipOf(plain)
		img.Layers = append(img.Layers, gz)
		descs = append(descs, v1.Descriptor{MediaType: layerType, Digest: digest.FromBytes(gz), Size: int64(len(gz))})
		diffIDs = append(diffIDs, digest.FromBytes(plain))
	}
	img.Config = mustJSON(v1.Image{
		Created:  &tarEpoch,
		Platform: v1.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config: v1.ImageConfig{
			Cmd:    []string{"/cc/none"},
			Labels: map[string]string{"org.content-cache.regtest.seed": strconv.FormatInt(seed, 10)},
		},
		RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs},
	})
	m := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: manifestType,
		Config:    v1.Descriptor{MediaType: configType, Digest: digest.FromBytes(img.Config), Size: int64(len(img.Config))},
		Layers:    descs,
	}
	img.Manifest = mustJSON(m)
	img.Digest = digest.FromBytes(img.Manifest)
	return img
}

type tarFile struct {
	name string
	dir  bool
	data []byte
}

// tarOf writes files into a tar with fixed owners, modes and times.
func tarOf(files []tarFile) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, ModTime: tarEpoch, Format: tar.FormatPAX, Uname: "root", Gname: "root"}
		if f.dir {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// gzipOf compresses b with no name or time in the header, so the same b
// always gives the same bytes (for one Go version).
func gzipOf(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// LayerFile returns the content of the regular file name in a gzip'd tar
// layer such as TarImage's.
func LayerFile(layer []byte, name string) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("regtest: %s not in layer", name)
		}
		if err != nil {
			return nil, err
		}
		if h.Name == name && h.Typeflag == tar.TypeReg {
			return io.ReadAll(tr)
		}
	}
}
