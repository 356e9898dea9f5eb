# syntax=docker/dockerfile:1
#
# content-cache container image.
#
#   docker build --build-arg VERSION=$(git describe --always --dirty) -t content-cache .
#   docker run -p 5000:5000 -v $PWD/config.yml:/config.yml content-cache /config.yml
#
# Without an argument it serves /etc/content-cache/config.yml, a copy of
# configs/cache.yml (whose origin is a placeholder: mount your own).

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that source edits do not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/content-cache/content-cache/registry.Version=${VERSION}" \
      -o /out/content-cache ./cmd/content-cache \
 && mkdir -p /out/var/lib/registry

# Static binary, CA certificates, no shell, user nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/content-cache /usr/local/bin/content-cache
# The storage directory must belong to the user the cache runs as; a new
# volume mounted there inherits this ownership.
COPY --from=build --chown=65532:65532 /out/var/lib/registry /var/lib/registry
COPY configs/cache.yml /etc/content-cache/config.yml
USER 65532:65532
EXPOSE 5000
VOLUME /var/lib/registry
ENTRYPOINT ["content-cache", "serve"]
CMD ["/etc/content-cache/config.yml"]
