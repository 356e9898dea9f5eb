package fill

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

// A follower may ask the replica holding a fill's lease before the fill
// there says it leads (the leader looks at storage between taking the
// lease and fetching). It must wait for the fill's start, not be refused:
// refused, it waits for the whole fill to end and reads it from storage
// instead of streaming it (seen in the replicas bench: 32 clients, first
// layer bytes seconds late). Once the fill started, only a fill that leads
// is served.
func TestServePeerWaitsForTheFillToLead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := PeerKey("cluster secret")
		const leader = "http://10.0.0.1:5001"
		follower := newPeerAuth(key, "http://10.0.0.2:5001")
		peers := func() *Peers { return &Peers{Key: key, Self: leader, auth: newPeerAuth(key, leader)} }
		now := func() time.Time { return time.Unix(1_700_000_000, 0) }
		d := digest.FromString("blob")
		serve := func(c *Fills) *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, PeerPath+d.String()+"?origin=", nil)
			follower.sign(r, leader, now())
			go c.ServePeer(rec, r)
			synctest.Wait()
			return rec
		}
		for _, tc := range []struct {
			name  string
			leads bool
			want  int
		}{
			{"the fill ends before streaming", true, http.StatusServiceUnavailable},
			{"the fill here follows another replica", false, http.StatusNotFound},
		} {
			f := &Fill{dgst: d, key: fillKey{"", d}, state: State{Size: -1}}
			c := &Fills{fills: map[fillKey]*Fill{f.key: f}, now: now, peers: peers()}
			rec := serve(c)
			if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
				t.Fatalf("%s: answered %d %q before the fill said whether it leads", tc.name, rec.Code, rec.Body)
			}
			f.leads.Store(tc.leads)
			if tc.leads {
				f.update(func(s *State) { s.Finished = true })
			} else {
				f.update(func(s *State) { s.Started = true })
			}
			synctest.Wait()
			if rec.Code != tc.want {
				t.Fatalf("%s: status %d, want %d", tc.name, rec.Code, tc.want)
			}
		}
		// No fill of the digest here: refused at once.
		rec := serve(&Fills{fills: map[fillKey]*Fill{}, now: now, peers: peers()})
		if rec.Code != http.StatusNotFound {
			t.Fatalf("no fill: status %d, want 404", rec.Code)
		}
	})
}
