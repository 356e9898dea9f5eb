package registry

import (
	"errors"
	"net/http"
	"reflect"
	"time"
	"unsafe"

	distregistry "github.com/distribution/distribution/v3/registry"
)

// setClientTimeouts sets the header-read and idle timeouts of srv, the
// server distribution's Registry serves with: distribution v3.1.2 sets none
// (a client trickling its headers holds its connection forever).
func setClientTimeouts(srv *http.Server, header, idle time.Duration) {
	// ReadHeaderTimeout also bounds the TLS handshake; the read deadline
	// is lifted once the headers are in, so slow bodies and long blob
	// downloads are not cut.
	srv.ReadHeaderTimeout = header
	srv.IdleTimeout = idle
}

// httpServer returns the http.Server that distribution's Registry serves
// with. distribution v3.1.2 keeps it in an unexported field with no
// accessor, so it is reached by reflection. If a distribution upgrade
// renames or retypes the field, startup fails here instead of running
// without the timeouts and the drain.
func httpServer(reg *distregistry.Registry) (*http.Server, error) {
	f := reflect.ValueOf(reg).Elem().FieldByName("server")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*http.Server]() {
		return nil, errors.New("cannot set the client timeouts and the drain: distribution's Registry has no server field of type *http.Server (distribution upgraded?)")
	}
	srv := *(**http.Server)(unsafe.Pointer(f.UnsafeAddr()))
	if srv == nil {
		return nil, errors.New("cannot set the client timeouts and the drain: distribution's Registry has no http.Server")
	}
	return srv, nil
}
