package downstream

import "github.com/opencontainers/go-digest"

// FillSharing is, for tests, how many requests wait for the answer to the
// origin request of dgst's fill with their own credential and repository.
func (c *Cache) FillSharing(dgst digest.Digest) int { return c.fills.Sharing(dgst) }
