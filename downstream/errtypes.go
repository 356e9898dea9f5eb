package downstream

import "github.com/content-cache/content-cache/downstream/internal/upstream"

// StatusError is an upstream's non-success answer: its status, headers
// (challenges among them) and at most 64 KiB of its body.
type StatusError = upstream.StatusError

// UpstreamError is a failure to get any answer from an upstream.
type UpstreamError = upstream.UpstreamError
