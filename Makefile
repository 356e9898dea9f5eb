# content-cache developer tasks. `make` alone lists them.

GO      ?= go
PKG     := github.com/content-cache/content-cache
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X $(PKG)/registry.Version=$(VERSION)

# Pinned linters, installed into ./.tools (git-ignored) on first use.
# staticcheck 2026.2.2 is v0.8.2 of honnef.co/go/tools; it supports go1.26.
TOOLS               := $(CURDIR)/.tools
STATICCHECK_VERSION := v0.8.2
STATICCHECK         := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)/staticcheck

# Pinned registry clients for the conformance/ client tests (build with
# go1.26), installed into ./.tools/bin by `make tools`.
CRANE_VERSION  := v0.22.1
REGCTL_VERSION := v0.11.7
ORAS_VERSION   := v1.3.6

# Object-store API servers for the storage driver tests (downstream/
# storage_drivers_test.go): versitygw (S3) and fake-gcs-server (GCS) as Go
# programs into ./.tools/bin, Azurite (Azure) from npm into
# ./.tools/azurite-$(AZURITE_VERSION). The tests skip a missing server
# unless CI is set.
VERSITYGW_VERSION := v1.8.0
# helm for the chart checks in deploy/check (make test), into ./.tools/bin.
HELM_VERSION      := v4.3.2
FAKE_GCS_VERSION  := v1.56.1
AZURITE_VERSION   := 3.37.0
AZURITE           := $(TOOLS)/azurite-$(AZURITE_VERSION)/node_modules/.bin/azurite-blob

# The OCI distribution-spec conformance program (a plain Go program; only
# this pseudo-version is served), built into ./.tools by `make conformance`.
OCI_CONFORMANCE_VERSION := v0.0.0-20260831232431-97274622c111
OCI_CONFORMANCE         := $(TOOLS)/oci-conformance-$(OCI_CONFORMANCE_VERSION)/conformance

.DEFAULT_GOAL := help
.PHONY: help build image test lint demo conformance bench bench-tls bench-ab bench-trace clean

help: ## List the targets (the default)
	@echo "usage: make TARGET"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/content-cache, versioned by git describe
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/content-cache ./cmd/content-cache

# The container image's tag for `make image`.
IMAGE ?= content-cache:$(VERSION)

image: build ## Build the container image from bin/content-cache, offline (FROM scratch; a private dockerd if no engine answers)
	deploy/image/build.sh bin/content-cache $(IMAGE)

test: export PATH := $(CURDIR)/.tools/bin:$(PATH)
test: tools ## Run every test with the race detector
	$(GO) test -race -count=1 -timeout 30m ./...
	@# The deployment checks (Helm chart, compose and stack files) are a
	@# module of their own, to keep Kubernetes' libraries out of go.mod.
	cd deploy/check && $(GO) test -race -count=1 -timeout 30m ./...

.PHONY: tools
tools: ## Install the pinned crane, regctl, oras, versitygw, fake-gcs-server and helm into .tools/bin, and Azurite when npm is there
	GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
	GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/regclient/regclient/cmd/regctl@$(REGCTL_VERSION)
	GOBIN=$(CURDIR)/.tools/bin $(GO) install oras.land/oras/cmd/oras@$(ORAS_VERSION)
	@# versitygw takes a minute to build: only when its pinned version is missing.
	@if [ "$$(cat .tools/bin/.versitygw-version 2>/dev/null)" != "$(VERSITYGW_VERSION)" ]; then \
		echo "GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)"; \
		GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION) && \
		echo $(VERSITYGW_VERSION) > .tools/bin/.versitygw-version; fi
	@if [ "$$(cat .tools/bin/.helm-version 2>/dev/null)" != "$(HELM_VERSION)" ]; then \
		echo "GOBIN=$(CURDIR)/.tools/bin $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)"; \
		GOBIN=$(CURDIR)/.tools/bin $(GO) install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION) && \
		echo $(HELM_VERSION) > .tools/bin/.helm-version; fi
	@if [ "$$(cat .tools/bin/.fake-gcs-server-version 2>/dev/null)" != "$(FAKE_GCS_VERSION)" ]; then \
		echo "GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/fsouza/fake-gcs-server@$(FAKE_GCS_VERSION)"; \
		GOBIN=$(CURDIR)/.tools/bin $(GO) install github.com/fsouza/fake-gcs-server@$(FAKE_GCS_VERSION) && \
		echo $(FAKE_GCS_VERSION) > .tools/bin/.fake-gcs-server-version; fi
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory azurite; \
	else echo "npm not found: the azure storage tests will skip (CI installs it)"; fi

.PHONY: azurite
azurite: $(AZURITE) ## Install the pinned Azurite (npm) into .tools

$(AZURITE):
	npm install --prefix $(TOOLS)/azurite-$(AZURITE_VERSION) --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

lint: $(STATICCHECK) ## gofmt, go vet and staticcheck (pinned)
	@unformatted="$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -path './.tools/*'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	cd deploy/check && $(GO) vet ./... && $(STATICCHECK) ./...

$(STATICCHECK):
	GOBIN=$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

demo: build ## Run the demo: an origin and a cache; pulls through the cache's address and from the origin's (transparent redirects), with bytes served by each
	$(GO) run ./cmd/demo -bin bin/content-cache

conformance: $(OCI_CONFORMANCE) ## OCI conformance: origin, cache and chain on loopback (conformance/results/latest.md)
	CONTENT_CACHE_OCI_CONFORMANCE=$(OCI_CONFORMANCE) $(GO) test -count=1 -v -run '^TestOCIConformance$$' ./conformance

$(OCI_CONFORMANCE):
	GOBIN=$(dir $@) $(GO) install github.com/opencontainers/distribution-spec/conformance@$(OCI_CONFORMANCE_VERSION)

# Flags for `make bench`, e.g. BENCHFLAGS="-wan -out /tmp/bench.md" or
# BENCHFLAGS="-rss-size 4GiB"; `go run ./bench -h` lists them all.
BENCHFLAGS ?=

bench: build tools ## Origin, content-cache and distribution's proxy side by side on loopback (BENCHFLAGS="-wan -out FILE")
	$(GO) run ./bench -bin bin/content-cache -crane $(CURDIR)/.tools/bin/crane $(BENCHFLAGS)

bench-tls: build tools ## make bench with every registry on HTTPS (a CA made by the harness)
	$(GO) run ./bench -bin bin/content-cache -crane $(CURDIR)/.tools/bin/crane -tls $(BENCHFLAGS)

# The revision bench-ab compares the working tree's binary with.
BASE ?= main

bench-ab: build tools ## make bench with a second content-cache built from BASE (default main) side by side, and new/base ratios
	$(GO) run ./bench -bin bin/content-cache -crane $(CURDIR)/.tools/bin/crane -base-rev $(BASE) $(BENCHFLAGS)

bench-trace: build tools ## Timeline of cold crane pulls from the registries' logs: where the pull's time goes
	$(GO) run ./bench -bin bin/content-cache -crane $(CURDIR)/.tools/bin/crane -only pull-trace $(BENCHFLAGS)

clean: ## Remove bin/ and .tools/
	rm -rf bin .tools
