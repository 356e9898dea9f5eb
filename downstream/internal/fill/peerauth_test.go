package fill

import (
	"net/http"
	"testing"
	"time"
)

// TestPeerAuth: an internal request is accepted once, by the replica it
// was signed for, with the key of the cluster, within peerSkew, for the
// URI it was signed for; anything else is refused (replayed, sent to
// another replica, another key, too old or too new, another digest).
func TestPeerAuth(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key := PeerKey("cluster secret")
	leader := newPeerAuth(key, "http://10.0.0.1:5001/")
	other := newPeerAuth(key, "http://10.0.0.2:5001")
	follower := newPeerAuth(key, "http://10.0.0.3:5001")
	uri := "http://10.0.0.1:5001" + PeerPath + "sha256:abc?origin="
	req := func() *http.Request {
		r, err := http.NewRequest(http.MethodGet, uri, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := req()
	follower.sign(r, "http://10.0.0.1:5001", now)
	if !leader.verify(r, now.Add(time.Second)) {
		t.Fatal("a request signed for the leader was refused")
	}
	if leader.verify(r, now.Add(2*time.Second)) {
		t.Fatal("a replayed request was accepted")
	}

	r = req()
	follower.sign(r, "http://10.0.0.1:5001", now)
	if other.verify(r, now) {
		t.Fatal("a request signed for another replica was accepted")
	}

	r = req()
	newPeerAuth(PeerKey("another secret"), "http://10.0.0.3:5001").sign(r, "http://10.0.0.1:5001", now)
	if leader.verify(r, now) {
		t.Fatal("a request signed with another key was accepted")
	}

	for _, skew := range []time.Duration{peerSkew + time.Second, -peerSkew - time.Second} {
		r = req()
		follower.sign(r, "http://10.0.0.1:5001", now)
		if leader.verify(r, now.Add(skew)) {
			t.Fatalf("a request %v off this replica's clock was accepted", skew)
		}
	}

	r = req()
	follower.sign(r, "http://10.0.0.1:5001", now)
	r.URL.Path += "def"
	if leader.verify(r, now) {
		t.Fatal("a request for another digest than it was signed for was accepted")
	}

	for _, h := range []string{"", "1.deadbeef", "1800000000." + "00000000000000000000000000000000" + ".00"} {
		r = req()
		if h != "" {
			r.Header.Set(peerHeader, h)
		}
		if leader.verify(r, now) {
			t.Fatalf("header %q was accepted", h)
		}
	}
}

// TestPeerAuthForgetsOldNonces: nonces are forgotten once their requests
// are too old to be accepted anyway, so that memory stays bounded by the
// requests of one peerSkew.
func TestPeerAuthForgetsOldNonces(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a := newPeerAuth(PeerKey("s"), "http://leader")
	for i := range 5000 {
		r, _ := http.NewRequest(http.MethodGet, "http://leader"+PeerPath+"sha256:abc", nil)
		at := now.Add(time.Duration(i) * time.Second)
		a.sign(r, "http://leader", at)
		if !a.verify(r, at) {
			t.Fatalf("request %d refused", i)
		}
	}
	a.mu.Lock()
	n := len(a.seen)
	a.mu.Unlock()
	// At most the last peerSkew (300 s) of requests, plus one pruning
	// period's growth.
	if n > 2*int(peerSkew/time.Second)+1024+1 {
		t.Fatalf("%d nonces remembered after 5000 requests over 5000 s", n)
	}
}
