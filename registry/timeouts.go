package registry

import (
	"errors"
	"net/http"
	"reflect"
	"time"
	"unsafe"

	distregistry "github.com/distribution/distribution/v3/registry"
)

// setClientTimeouts sets the header-read and idle timeouts of the
// http.Server that distribution's Registry serves with. distribution v3.1.2
// sets none (a client trickling its headers holds its connection forever)
// and keeps the server in an unexported field with no setter, so it is
// reached by reflection. If a distribution upgrade renames or retypes the
// field, startup fails here instead of running unprotected.
func setClientTimeouts(reg *distregistry.Registry, header, idle time.Duration) error {
	f := reflect.ValueOf(reg).Elem().FieldByName("server")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*http.Server]() {
		return errors.New("cannot set clientheadertimeout and clientidletimeout: distribution's Registry has no server field of type *http.Server (distribution upgraded?)")
	}
	srv := *(**http.Server)(unsafe.Pointer(f.UnsafeAddr()))
	if srv == nil {
		return errors.New("cannot set clientheadertimeout and clientidletimeout: distribution's Registry has no http.Server")
	}
	// ReadHeaderTimeout also bounds the TLS handshake; the read deadline
	// is lifted once the headers are in, so slow bodies and long blob
	// downloads are not cut.
	srv.ReadHeaderTimeout = header
	srv.IdleTimeout = idle
	return nil
}
