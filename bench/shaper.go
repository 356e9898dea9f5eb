package main

import (
	"io"
	"net"
	"sync"
	"time"
)

// Shaper is a TCP proxy to one target that emulates a WAN link: every byte
// is delayed by a one-way latency in each direction, and each direction has
// a bandwidth cap shared by all the connections through it (one link, not
// one per connection). A new connection also costs one round trip before
// its first byte is forwarded, as a TCP handshake over the link would.
//
// It does not emulate TCP's slow start or loss: a transfer runs at the cap
// from its first round trip, which flatters long-haul transfers a little.
type Shaper struct {
	Addr   string // host:port it listens on
	target string
	delay  time.Duration
	up     *link // client to target
	down   *link // target to client
	// perConn caps each connection's bandwidth in each direction besides
	// the link's, as CDNs behind registries do (bits per second; 0: none).
	perConn float64

	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// NewShaper listens on a free loopback port and forwards to target with a
// one-way delay and a cap in bits per second per direction (0: no cap).
func NewShaper(target string, delay time.Duration, bitsPerSecond float64) (*Shaper, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Shaper{
		Addr: ln.Addr().String(), target: target, delay: delay,
		up: newLink(bitsPerSecond), down: newLink(bitsPerSecond),
		ln: ln, conns: map[net.Conn]struct{}{},
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Close stops listening and cuts every connection.
func (s *Shaper) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Shaper) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

func (s *Shaper) track(c net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conns == nil { // closed
		return false
	}
	if add {
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

func (s *Shaper) handle(client net.Conn) {
	if !s.track(client, true) {
		_ = client.Close()
		return
	}
	defer s.track(client, false)
	defer client.Close()
	// The handshake: SYN out, SYN-ACK back.
	time.Sleep(2 * s.delay)
	target, err := net.Dial("tcp", s.target)
	if err != nil {
		return
	}
	if !s.track(target, true) {
		_ = target.Close()
		return
	}
	defer s.track(target, false)
	defer target.Close()

	var wg sync.WaitGroup
	wg.Add(2)
	up, down := []*link{s.up}, []*link{s.down}
	if s.perConn > 0 {
		up, down = append(up, newLink(s.perConn)), append(down, newLink(s.perConn))
	}
	go func() { defer wg.Done(); s.pipe(target, client, up) }()
	go func() { defer wg.Done(); s.pipe(client, target, down) }()
	wg.Wait()
}

// chunk is data in flight on the link, delivered at at.
type chunk struct {
	b  []byte
	at time.Time
}

// chunkSize is the most read from a connection at once: 2.6 ms of a
// 100 Mbit/s line.
const chunkSize = 32 << 10

// burst is how far ahead of real time the line may be booked. Sleeps are
// not precise to the microsecond: without this slack, each late wake-up
// would cost the line the time it overslept.
const burst = 5 * time.Millisecond

// pipe copies src to dst across ls (the shared link, and the connection's
// own cap if any): a reader takes bytes from src only as fast as the
// slowest link serializes them (so TCP pushes back on the sender), and a
// writer delivers each chunk one delay after it left.
func (s *Shaper) pipe(dst, src net.Conn, ls []*link) {
	inFlight := make(chan chunk, 4096)
	go func() {
		defer close(inFlight)
		for {
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				sent := transmitAll(ls, n)
				// Keep at most burst of the line booked ahead: the sender
				// waits as on a real line, and a late wake-up does not
				// leave the line idle (the clock books from where it is).
				sleepUntil(sent.Add(-burst))
				inFlight <- chunk{b: buf[:n], at: sent.Add(s.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range inFlight {
		if !failed {
			sleepUntil(c.at)
			if _, err := dst.Write(c.b); err != nil {
				failed = true
				// Unblock the reader: nothing more can be delivered.
				_ = src.Close()
			}
		}
	}
	if failed {
		_ = dst.Close()
		return
	}
	// src said EOF (or broke): pass the half-close on.
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		_ = dst.Close()
	}
}

func sleepUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		time.Sleep(d)
	}
}

// transmitAll books n bytes on every link and returns when the last of
// them has sent them.
func transmitAll(ls []*link, n int) time.Time {
	var sent time.Time
	for _, l := range ls {
		if t := l.transmit(n); t.After(sent) {
			sent = t
		}
	}
	return sent
}

// link is one direction of the emulated WAN: a virtual clock of when the
// line is free, shared by every connection using that direction.
type link struct {
	bytesPerSecond float64 // 0: unlimited
	mu             sync.Mutex
	free           time.Time
}

func newLink(bitsPerSecond float64) *link { return &link{bytesPerSecond: bitsPerSecond / 8} }

// transmit books n bytes on the line and returns when their last bit is
// sent.
func (l *link) transmit(n int) time.Time {
	now := time.Now()
	if l.bytesPerSecond <= 0 {
		return now
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	start := l.free
	if start.Before(now) {
		start = now
	}
	l.free = start.Add(time.Duration(float64(n) / l.bytesPerSecond * float64(time.Second)))
	return l.free
}

var _ io.Closer = (*Shaper)(nil)
