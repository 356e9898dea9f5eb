package regtest

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
)

// VersityGWVersion is the S3 server the tests run, as pinned in the
// Makefile (`make tools`).
const VersityGWVersion = "v1.8.0"

// StartS3 starts versitygw with its posix back end over a temporary
// directory, with one bucket, and returns distribution's s3 driver on it.
func StartS3(t testing.TB) Storage {
	t.Helper()
	bin := Tool(t, "versitygw", "bin/versitygw")
	dir := t.TempDir()
	// With the posix back end a bucket is a directory.
	if err := os.Mkdir(filepath.Join(dir, "cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
	srv := startServer(t, "versitygw", addr, nil, s3Op,
		[]string{"ROOT_ACCESS_KEY=regtest", "ROOT_SECRET_KEY=regtest-secret"},
		bin, "--port", addr, "posix", dir)
	srv.Dir = filepath.Join(dir, "cache")
	return Storage{
		Driver: "s3",
		Params: configuration.Parameters{
			"accesskey":      "regtest",
			"secretkey":      "regtest-secret",
			"region":         "us-east-1",
			"regionendpoint": srv.URL,
			"bucket":         "cache",
			"chunksize":      5 << 20, // the smallest part S3 allows: fills span parts

			"forcepathstyle": true,
			"secure":         false,
		},
		Shared: true,
		Server: srv,
	}
}

// s3Op names an S3 API call.
func s3Op(r *http.Request) string {
	q := r.URL.Query()
	has := func(k string) bool { _, ok := q[k]; return ok }
	copySrc := r.Header.Get("X-Amz-Copy-Source") != ""
	switch r.Method {
	case http.MethodGet:
		if has("list-type") || has("prefix") || has("delimiter") {
			return "ListObjectsV2"
		}
		return "GetObject"
	case http.MethodHead:
		return "HeadObject"
	case http.MethodPut:
		switch {
		case has("partNumber") && copySrc:
			return "UploadPartCopy"
		case has("partNumber"):
			return "UploadPart"
		case copySrc:
			return "CopyObject"
		}
		return "PutObject"
	case http.MethodPost:
		switch {
		case has("uploads"):
			return "CreateMultipartUpload"
		case has("uploadId"):
			return "CompleteMultipartUpload"
		case has("delete"):
			return "DeleteObjects"
		}
	case http.MethodDelete:
		if has("uploadId") {
			return "AbortMultipartUpload"
		}
		return "DeleteObject"
	}
	return r.Method + " " + r.URL.RawQuery
}
