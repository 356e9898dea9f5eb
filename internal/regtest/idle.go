package regtest

import "context"

// WaitIdle blocks until the server serves no request: every handler has
// returned, and with it what a handler does after the client received the
// last byte (the cache's request log line and metrics).
func (s *Server) WaitIdle(ctx context.Context) error {
	for {
		s.Counts.mu.Lock()
		got, ch := s.Counts.inFlight, s.Counts.changed
		s.Counts.mu.Unlock()
		if got == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
