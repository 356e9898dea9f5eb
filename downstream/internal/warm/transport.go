package warm

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Loopback serves the cache's handler on a private loopback listener for
// the length of a run: the warm requests take the very path a user's
// pull takes, HTTP server included.
type Loopback struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

// Serve starts serving h on 127.0.0.1 at a free port.
func Serve(h http.Handler) (*Loopback, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Loopback{
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: time.Minute},
		addr: ln.Addr().String(),
		done: make(chan struct{}),
	}
	go func() {
		defer close(l.done)
		_ = l.srv.Serve(ln)
	}()
	return l, nil
}

// Close stops serving, letting requests in flight finish until ctx ends.
func (l *Loopback) Close(ctx context.Context) error {
	err := l.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		err = l.srv.Close()
	}
	<-l.done
	return err
}

// Client is an HTTP client whose requests to the registry hosts in hosts
// go to the loopback listener, with the ns query parameter of each (the
// cache reads it as containerd's mirrors send it); everything else (a
// token realm) goes where it names. Redirects are not followed: a stored
// blob's answer may be a redirect to the storage, which is all the warm
// client needs to know.
func (l *Loopback) Client(hosts map[string]Registry) *http.Client {
	base := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{
		Transport: &rewrite{base: base, addr: l.addr, hosts: hosts},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// rewrite sends requests for the registry hosts to the loopback listener.
type rewrite struct {
	base  *http.Transport
	addr  string
	hosts map[string]Registry
}

func (t *rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	reg, ok := t.hosts[req.URL.Host]
	if !ok {
		return t.base.RoundTrip(req)
	}
	out := req.Clone(req.Context())
	u := *req.URL
	u.Scheme, u.Host = "http", t.addr
	if reg.NS != "" {
		q := u.Query()
		q.Set("ns", reg.NS)
		u.RawQuery = q.Encode()
	}
	out.URL, out.Host = &u, ""
	resp, err := t.base.RoundTrip(out)
	if resp != nil {
		resp.Request = req // the client sees the registry it asked
	}
	return resp, err
}

func (t *rewrite) CloseIdleConnections() { t.base.CloseIdleConnections() }
