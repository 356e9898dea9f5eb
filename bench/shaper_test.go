package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// Bytes cross the shaper intact in both directions, half-closes included,
// and never faster than the link allows (a lower bound only: a slow machine
// cannot make this fail).
func TestShaperForwardsAndShapes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The target echoes everything back reversed in order of arrival: it
	// reads to EOF (the client's half-close), then answers.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(b)
			}()
		}
	}()

	const delay = 5 * time.Millisecond
	const bits = 64e6 // 8 MB/s
	s, err := NewShaper(ln.Addr().String(), delay, bits)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	want := make([]byte, 1<<20)
	_, _ = rand.Read(want)
	for range 2 { // two connections share the link
		start := time.Now()
		c, err := net.Dial("tcp", s.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(want); err != nil {
			t.Fatal(err)
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("echo through the shaper: %d of %d bytes, equal %v, %v", len(got), len(want), bytes.Equal(got, want), err)
		}
		// Handshake, request and answer: two round trips; and the bytes
		// cross the line twice.
		minimum := 4*delay + 2*time.Duration(float64(len(want))*8/bits*float64(time.Second))
		if elapsed := time.Since(start); elapsed < minimum {
			t.Fatalf("echo took %v, faster than the link allows (%v)", elapsed, minimum)
		}
	}
}

// Without a cap the shaper only delays.
func TestShaperUnlimited(t *testing.T) {
	if got := newLink(0).transmit(1 << 30); time.Until(got) > time.Millisecond {
		t.Fatalf("an unlimited link booked time: %v", time.Until(got))
	}
}

// A chunk is sent when the slowest of its links has sent it: the
// connection's own cap (perConn) holds below the shared link's.
func TestTransmitAllTakesTheSlowest(t *testing.T) {
	shared, conn := newLink(800e6), newLink(8e6) // 100 MB/s and 1 MB/s
	before := time.Now()
	sent := transmitAll([]*link{shared, conn}, 100_000)
	if d := sent.Sub(before); d < 100*time.Millisecond || d > time.Second {
		t.Fatalf("100 kB at 1 MB/s sent after %v, want about 100ms", d)
	}
	if shared.free.After(before.Add(50 * time.Millisecond)) {
		t.Fatalf("the shared link was booked for %v, want about 1ms", shared.free.Sub(before))
	}
}
