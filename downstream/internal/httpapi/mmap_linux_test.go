package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/content-cache/content-cache/downstream/internal/store"
	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
)

// mappedBlob stores size random bytes in a filesystem driver; it returns
// them, the API, the repository's blobs, the digest and the data's file.
func mappedBlob(t *testing.T, size int) ([]byte, *API, distribution.BlobStore, digest.Digest, string) {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(data)
	root := t.TempDir()
	c, blobs, dgst := fsBlobIn(t, root, data)
	return data, c, blobs, dgst, filepath.Join(root, store.BlobDataPath(dgst))
}

// mappingOf returns the file whose mapping holds p's first byte ("" for
// memory of no file, such as a buffer) and how many mappings of file the
// process has, from /proc/self/maps.
func mappingOf(t *testing.T, p []byte, file string) (holder string, maps int) {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var addr uint64
	if len(p) > 0 {
		addr = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(p))))
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode [path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		if fields[5] == file {
			maps++
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		if addr >= start && addr < end {
			holder = fields[5]
		}
	}
	return holder, maps
}

// hookWriter calls onHeader when the response's header is written, and
// onWrite with the first body Write's bytes before passing them on.
type hookWriter struct {
	http.ResponseWriter
	onHeader func()
	onWrite  func(p []byte)
}

func (h *hookWriter) WriteHeader(code int) {
	if h.onHeader != nil {
		h.onHeader()
		h.onHeader = nil
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *hookWriter) Write(p []byte) (int, error) {
	if h.onWrite != nil {
		h.onWrite(p)
		h.onWrite = nil
	}
	return h.ResponseWriter.Write(p)
}

// loopbackCtx is the context of a request on a loopback connection.
func loopbackCtx(t *testing.T) context.Context {
	return context.WithValue(t.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5000})
}

// A filesystem hit on loopback over plain HTTP/1 is written from a mapping
// of the stored file, whole and ranged (window and page boundaries
// crossed, a range inside one page, the last page alone), with exact
// bytes and headers; one under minMapped through a buffer; HEAD writes
// none. No mapping is left behind, and the
// goroutine's fault setting is as it was.
func TestServeLocalFromMapping(t *testing.T) {
	size := 2*mapWindow + 5000 // three windows, the last page partial
	data, c, blobs, dgst, file := mappedBlob(t, size)
	page := os.Getpagesize()
	for _, tc := range []struct {
		name   string
		method string
		rng    string
		start  int
		end    int // exclusive
	}{
		{"full", http.MethodGet, "", 0, size},
		{"across windows", http.MethodGet, fmt.Sprintf("bytes=%d-%d", page+3, 2*mapWindow+10), page + 3, 2*mapWindow + 11},
		{"open range", http.MethodGet, fmt.Sprintf("bytes=%d-", mapWindow-7), mapWindow - 7, size},
		{"inside one page", http.MethodGet, "bytes=5-100", 5, 101},
		{"under minMapped", http.MethodGet, fmt.Sprintf("bytes=%d-%d", mapWindow-7, mapWindow+minMapped-9), mapWindow - 7, mapWindow + minMapped - 8},
		{"the last page", http.MethodGet, fmt.Sprintf("bytes=%d-", size-100), size - 100, size},
		{"HEAD", http.MethodHead, "", 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			var holder string
			sw := &statusWriter{ResponseWriter: &hookWriter{ResponseWriter: rec, onWrite: func(p []byte) {
				holder, _ = mappingOf(t, p, file)
			}}}
			req := httptest.NewRequestWithContext(loopbackCtx(t), tc.method, "/v2/a/blobs/"+dgst.String(), nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			if !c.serveLocal(sw, req, blobs, dgst) {
				t.Fatal("not served")
			}
			want, status := data[tc.start:tc.end], http.StatusOK
			if tc.rng != "" {
				status = http.StatusPartialContent
				if got, cr := rec.Header().Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end-1, size); got != cr {
					t.Errorf("Content-Range %q, want %q", got, cr)
				}
			}
			length := len(want)
			if tc.method == http.MethodHead {
				length = size
			}
			if rec.Code != status || rec.Header().Get("Content-Length") != strconv.Itoa(length) || !bytes.Equal(rec.Body.Bytes(), want) {
				t.Fatalf("got %d, Content-Length %s, %d bytes (equal: %v); want %d, %d, %d bytes",
					rec.Code, rec.Header().Get("Content-Length"), rec.Body.Len(), bytes.Equal(rec.Body.Bytes(), want), status, length, len(want))
			}
			if sw.bytes != int64(len(want)) {
				t.Errorf("request log: %d bytes, want %d", sw.bytes, len(want))
			}
			if mapped := tc.end-tc.start >= minMapped; mapped && holder != file || !mapped && holder != "" {
				t.Errorf("the first write came from %q (a mapping of the blob's file wanted: %v)", holder, mapped)
			}
			if _, maps := mappingOf(t, nil, file); maps != 0 {
				t.Errorf("%d mappings of the file left", maps)
			}
			if debug.SetPanicOnFault(false) {
				t.Error("SetPanicOnFault left on")
			}
		})
	}
}

// HTTP/2 (whose writer copies in its connection's goroutine, out of the
// fault recovery) and TLS hits are not written from a mapping.
func TestServeLocalNotMapped(t *testing.T) {
	data, c, blobs, dgst, file := mappedBlob(t, 2*mapWindow)
	for _, name := range []string{"HTTP/2", "TLS"} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			var holder string
			sw := &statusWriter{ResponseWriter: &hookWriter{ResponseWriter: rec, onWrite: func(p []byte) {
				holder, _ = mappingOf(t, p, file)
			}}}
			req := httptest.NewRequestWithContext(loopbackCtx(t), http.MethodGet, "/v2/a/blobs/"+dgst.String(), nil)
			if name == "TLS" {
				req.TLS = &tls.ConnectionState{}
			} else {
				req.Proto, req.ProtoMajor, req.ProtoMinor = "HTTP/2.0", 2, 0
			}
			if !c.serveLocal(sw, req, blobs, dgst) || !bytes.Equal(rec.Body.Bytes(), data) {
				t.Fatalf("got %d bytes (equal: %v)", rec.Body.Len(), bytes.Equal(rec.Body.Bytes(), data))
			}
			if holder != "" {
				t.Errorf("written from a mapping of %s", holder)
			}
		})
	}
}

// A stored file cut before or while it is written from the mapping (a
// fault on the pages past its end, or a short last page) aborts the
// response: never a complete-looking body, no mapping left, and the
// goroutine's fault setting as it was.
func TestServeLocalMappedFileTruncated(t *testing.T) {
	size := 2*mapWindow + 5000
	for _, tc := range []struct {
		name     string
		rng      string
		cut      int64
		onHeader bool // cut before the copy starts, else at its first write
	}{
		{"cut to nothing before the copy", "", 0, true},
		{"cut in the second window before the copy", "", mapWindow + 100, true},
		{"cut in the last page before the copy", "", int64(size) - 10, true},
		{"cut in the range's last page before the copy", fmt.Sprintf("bytes=0-%d", mapWindow+1000), mapWindow + 900, true},
		{"cut during the first write", "", 100, false},
		{"cut in the last page during the copy", "", int64(size) - 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, c, blobs, dgst, file := mappedBlob(t, size)
			cut := func() {
				if err := os.Truncate(file, tc.cut); err != nil {
					t.Error(err)
				}
			}
			hw := &hookWriter{ResponseWriter: httptest.NewRecorder()}
			if tc.onHeader {
				hw.onHeader = func() { cut() }
			} else {
				hw.onWrite = func([]byte) { cut() }
			}
			rec := hw.ResponseWriter.(*httptest.ResponseRecorder)
			sw := &statusWriter{ResponseWriter: hw}
			req := httptest.NewRequestWithContext(loopbackCtx(t), http.MethodGet, "/v2/a/blobs/"+dgst.String(), nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			p := func() (p any) {
				defer func() { p = recover() }()
				c.serveLocal(sw, req, blobs, dgst)
				return nil
			}()
			if p != http.ErrAbortHandler {
				t.Errorf("panic %v, want http.ErrAbortHandler", p)
			}
			if length, _ := strconv.Atoi(rec.Header().Get("Content-Length")); rec.Body.Len() >= length {
				t.Errorf("%d bytes written of a Content-Length of %d: a complete-looking body", rec.Body.Len(), length)
			}
			if _, maps := mappingOf(t, nil, file); maps != 0 {
				t.Errorf("%d mappings of the file left", maps)
			}
			if debug.SetPanicOnFault(false) {
				t.Error("SetPanicOnFault left on")
			}
		})
	}
}

// Over a real loopback connection, a file cut under the mapping cuts the
// response short (the client sees an error, not a whole body), and the server
// goes on serving: the file restored, the next GET gets it whole.
func TestServeMappedTruncatedOverLoopback(t *testing.T) {
	size := 2*mapWindow + 5000
	data, c, blobs, dgst, file := mappedBlob(t, size)
	cutNext := make(chan int64, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &hookWriter{ResponseWriter: w}
		select {
		case n := <-cutNext:
			hw.onHeader = func() {
				if err := os.Truncate(file, n); err != nil {
					t.Error(err)
				}
			}
		default:
		}
		if !c.serveLocal(&statusWriter{ResponseWriter: hw}, r, blobs, dgst) {
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	get := func() ([]byte, error) {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("status %s", resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	for _, n := range []int64{0, mapWindow + 100, int64(size) - 10} {
		cutNext <- n
		if body, err := get(); err == nil {
			t.Errorf("cut to %d: a complete-looking body of %d bytes", n, len(body))
		}
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if body, err := get(); err != nil || !bytes.Equal(body, data) {
			t.Fatalf("after the cut to %d, restored: %d bytes (equal: %v), %v", n, len(body), bytes.Equal(body, data), err)
		}
	}
	if _, maps := mappingOf(t, nil, file); maps != 0 {
		t.Errorf("%d mappings of the file left", maps)
	}
}

// copyMapped writes exact bytes from any offset and length, those under
// minMapped too (which copyBlob buffers): inside one page, across one
// page boundary, the last page alone, a window and one byte.
func TestCopyMappedRanges(t *testing.T) {
	size := 2*mapWindow + 5000
	data, _, _, _, file := mappedBlob(t, size)
	page := os.Getpagesize()
	for _, r := range [][2]int{{0, 0}, {5, 96}, {page - 3, 10}, {size - 100, 100}, {size - 1, 1}, {page, mapWindow + 1}, {0, size}} {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Seek(int64(r[0]), io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		n, err := copyMapped(&buf, f, int64(r[1]))
		f.Close()
		if want := data[r[0] : r[0]+r[1]]; n != int64(r[1]) || err != nil || !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("%d bytes from %d: %d, %v, equal %v", r[1], r[0], n, err, bytes.Equal(buf.Bytes(), want))
		}
	}
	if _, maps := mappingOf(t, nil, file); maps != 0 {
		t.Errorf("%d mappings of the file left", maps)
	}
}
