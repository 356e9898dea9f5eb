package fill

import (
	"github.com/opencontainers/go-digest"

	"github.com/content-cache/content-cache/downstream/internal/ident"
)

// Committing returns the fill of dgst that verified every byte for repo
// and has not finished storing them, or nil. Its commit moves the data
// into place before it links it into repo: a request that finds the data
// but no link in that window waits for the link here instead of asking the
// origin what the link will say (a prefetched fill committing as the
// client asks for its blob cost that request a round trip to the origin).
func (c *Fills) Committing(repo ident.Repo, dgst digest.Digest) *Fill {
	c.mu.Lock()
	f := c.fills[fillKey{repo.Origin(), dgst}]
	c.mu.Unlock()
	if f == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// repo is read only once the fill started (Verified implies it).
	if !f.state.Verified || f.state.Finished || f.repo.Key() != repo.Key() {
		return nil
	}
	return f
}
