// Package check holds the offline checks of the deployment files: the
// swarm stacks and the compose file (compose-spec schema, strict), and the
// Helm chart (helm lint, helm template for each values example, every
// rendered object decoded strictly into the Kubernetes API types). It is a
// module of its own so that the Kubernetes and compose libraries stay out
// of the cache's dependencies; `make test` and `make lint` run it.
package check
