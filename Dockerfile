# content-cache container image, built from source (needs the golang image).
#
#   docker build --build-arg VERSION=$(git describe --always --dirty) -t content-cache .
#   docker run -p 5000:5000 -v $PWD/config.yml:/config.yml content-cache /config.yml
#
# Offline, with no base image at all, `make image` builds the same image
# from `make build`'s binary (deploy/image/). Both lay out the same files
# with deploy/image/layout.sh and share the final stage: a static binary,
# the CA bundle, user nonroot (65532), no shell. Without an argument it
# serves /etc/content-cache/config.yml, a copy of configs/cache.yml (whose
# origin is a placeholder: mount your own).

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
 && deploy/image/layout.sh /out /out/content-cache /etc/ssl/certs/ca-certificates.crt

# The same as deploy/image/Dockerfile, from the build stage.
FROM scratch
COPY --from=build /out/rootfs/ /
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/registry/
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
EXPOSE 5000
VOLUME /var/lib/registry
ENTRYPOINT ["/usr/local/bin/content-cache", "serve"]
CMD ["/etc/content-cache/config.yml"]
