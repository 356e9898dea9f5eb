package fill

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A reader behind the window copies a stored file as the file itself, so
// that a response's ReadFrom can send it with sendfile; any other reader
// is wrapped so that its failures are the fill's.
func TestStorageSourceKeepsFiles(t *testing.T) {
	name := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(name, []byte("blob"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := storageSource(f, "the upload in progress"); got != io.Reader(f) {
		t.Fatalf("a file became %T", got)
	}

	failing := io.MultiReader(strings.NewReader("x"), errReader{})
	src := storageSource(failing, "the stored blob")
	if _, err := io.ReadAll(src); !errors.Is(err, ErrFailed) {
		t.Fatalf("a failing reader's error %v is not ErrFailed", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
