// Package origin is the origin side of transparent content caches: the
// registry that owns the content keeps authorizing every pull, and
// redirects the blob downloads of users assigned to a cache to that cache
// with a signed URL (see downstream/internal/signature). Users keep pulling
// from the origin's address; manifests, tags and HEAD are always answered
// by the origin.
//
// It is distribution registry middleware, registered at import as
// "contentcaches" (middleware.registry), plus an HTTP handler serving the
// content cache API under /api/v0/ after DTR's:
//
//	middleware:
//	  registry:
//	    - name: contentcaches
//	      options:
//	        signingkey: /etc/content-cache/origin-ed25519.pem
//	        admins: [admin]
//
// It also serves web pages at /ui/ (ui.go: users pick their cache, admins
// manage caches) and the API's OpenAPI document at /api/v0/openapi.yaml.
//
// Caches and user settings created through the API are kept in the
// registry's storage under /content-cache/v1/origin/, shared by replicas.
package origin
