package downstream

import (
	"context"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/reference"
)

// sealedNamespace is what the app gets from the middleware. The cache's
// handler serves every repository route itself, so a request that reaches
// the app's namespace means the handler is not installed: refuse it clearly
// rather than serve unauthorized content or accept a write.
type sealedNamespace struct {
	distribution.Namespace
}

var _ distribution.Namespace = sealedNamespace{}

func (sealedNamespace) Repository(context.Context, reference.Named) (distribution.Repository, error) {
	return nil, errcode.ErrorCodeUnsupported.WithMessage(
		"downstream: the content-cache HTTP handler is not installed; import github.com/content-cache/content-cache/downstream in the registry binary and serve it with distribution's registry package (registry.NewRegistry)")
}

func (sealedNamespace) Repositories(context.Context, []string, string) (int, error) {
	return 0, errcode.ErrorCodeUnsupported.WithMessage("downstream: the catalog is answered by the origin")
}
