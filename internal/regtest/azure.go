package regtest

import (
	"net/http"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/distribution/distribution/v3/configuration"
)

// AzuriteVersion is the Azure storage emulator the tests run, as pinned in
// the Makefile (npm, into .tools/azurite-VERSION).
const AzuriteVersion = "3.37.0"

// Azurite's well-known development account.
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// StartAzure starts Azurite's blob service over a temporary directory,
// with one container, and returns distribution's azure driver on it. It
// speaks HTTPS: the driver's presigned URLs (SAS) are HTTPS-only.
func StartAzure(t testing.TB) Storage {
	t.Helper()
	bin := Tool(t, "azurite-blob", "azurite-"+AzuriteVersion+"/node_modules/.bin/azurite-blob")
	dir := t.TempDir()
	addr := FreeAddr(t)
	host, port := splitHostPort(t, addr)
	ca := NewCA(t)
	cert, key := ca.ServerFiles(t)
	srv := startServer(t, "azurite", addr, ca, azureOp, nil, bin,
		"--blobHost", host, "--blobPort", port, "--location", dir,
		"--cert", cert, "--key", key,
		"--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry")
	serviceURL := srv.URL + "/" + azuriteAccount
	cred, err := azblob.NewSharedKeyCredential(azuriteAccount, azuriteKey)
	if err != nil {
		t.Fatal(err)
	}
	opts := &azblob.ClientOptions{}
	opts.Transport = srv.Client()
	client, err := azblob.NewClientWithSharedKeyCredential(serviceURL, cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CreateContainer(t.Context(), "cache", nil); err != nil {
		t.Fatalf("creating the container: %v", err)
	}
	return Storage{
		Driver: "azure",
		Params: configuration.Parameters{
			"credentials": map[string]any{"type": "shared_key"},
			"accountname": azuriteAccount,
			"accountkey":  azuriteKey,
			"container":   "cache",
			"serviceurl":  serviceURL,
			// The driver has no CA option: the test CA is not trusted.
			"skipverify": true,
		},
		Shared: true,
		Server: srv,
	}
}

// azureOp names a Blob service call.
func azureOp(r *http.Request) string {
	q := r.URL.Query()
	comp := q.Get("comp")
	switch {
	case r.Method == http.MethodGet && comp == "list":
		return "ListBlobs"
	case r.Method == http.MethodGet:
		return "GetBlob"
	case r.Method == http.MethodHead:
		return "GetBlobProperties"
	case r.Method == http.MethodPut && comp == "appendblock":
		return "AppendBlock"
	case r.Method == http.MethodPut && r.Header.Get("X-Ms-Copy-Source") != "":
		return "CopyBlob"
	case r.Method == http.MethodPut && comp == "":
		return "PutBlob"
	case r.Method == http.MethodDelete:
		return "DeleteBlob"
	}
	return r.Method + " comp=" + comp
}
