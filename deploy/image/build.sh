#!/bin/sh
# build.sh BINARY TAG: builds the content-cache image from a static binary
# (`make image` passes bin/content-cache), offline: FROM scratch, nothing
# pulled. It builds with the Docker engine at DOCKER_HOST, or the default
# one, when that answers. Otherwise, as root, it starts a private dockerd
# (own data root, exec root and socket in a temp dir, vfs storage, no
# bridge, no iptables), builds there, saves the image to
# bin/content-cache-image.tar (`docker load -i` it where you need it) and
# stops that dockerd. Run from the repository root. CA_BUNDLE overrides the
# CA certificates copied into the image.
set -eu
bin=$1 tag=$2
cas=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
here=$(dirname "$0")
work=$(mktemp -d "${TMPDIR:-/tmp}/cc-image-XXXXXX")
dockerd_pid=
cleanup() {
	if [ -n "$dockerd_pid" ]; then
		kill -TERM "$dockerd_pid" 2>/dev/null || true
		i=0
		while kill -0 "$dockerd_pid" 2>/dev/null && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$dockerd_pid" 2>/dev/null || true
		# dockerd bind-mounts its data root onto itself; detach what is left.
		awk -v d="$work/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
			while read -r m; do umount -l "$m" 2>/dev/null || true; done
	fi
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$here/layout.sh" "$work/context" "$bin" "$cas"
cp "$here/Dockerfile" "$work/context/Dockerfile"

build() {
	# The classic builder: BuildKit would want its frontend image for some
	# Dockerfiles, and the classic one needs nothing for FROM scratch.
	DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$work/context" >/dev/null
	size=$(docker image inspect --format '{{.Size}}' "$tag")
	echo "image $tag: $size bytes ($((size / 1024 / 1024)) MiB)"
}

if [ -n "${DOCKER_HOST:-}" ] || docker version >/dev/null 2>&1; then
	build
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "build.sh: no Docker engine answers (set DOCKER_HOST), and starting a private dockerd needs root" >&2
	exit 1
fi
dockerd=$(PATH="$PATH:/usr/sbin:/sbin" command -v dockerd) || {
	echo "build.sh: no Docker engine answers and dockerd is not installed (Debian package docker.io)" >&2
	exit 1
}
printf '{"deprecated-key-path": "%s/key.json"}\n' "$work" >"$work/daemon.json"
export DOCKER_HOST="unix://$work/docker.sock"
"$dockerd" --config-file "$work/daemon.json" --data-root "$work/root" --exec-root "$work/exec" \
	--host "$DOCKER_HOST" --pidfile "$work/dockerd.pid" --storage-driver vfs \
	--iptables=false --ip6tables=false --bridge=none >"$work/dockerd.log" 2>&1 &
dockerd_pid=$!
i=0
until docker version >/dev/null 2>&1; do
	if ! kill -0 "$dockerd_pid" 2>/dev/null || [ $i -ge 600 ]; then
		echo "build.sh: the private dockerd did not start:" >&2
		cat "$work/dockerd.log" >&2
		exit 1
	fi
	sleep 0.1
	i=$((i + 1))
done
build
mkdir -p bin
docker save --output bin/content-cache-image.tar "$tag"
echo "saved to bin/content-cache-image.tar: docker load --input bin/content-cache-image.tar"
