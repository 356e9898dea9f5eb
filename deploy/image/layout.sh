#!/bin/sh
# layout.sh DIR BINARY CA_BUNDLE: lays out the image's build context in DIR
# (see deploy/image/Dockerfile). Used by build.sh (make image) and by the
# build stage of the multi-stage Dockerfile, so both images hold the same
# files. Run from the repository root.
set -eu
dir=$1 bin=$2 cas=$3
here=$(dirname "$0")
mkdir -p "$dir/rootfs/usr/local/bin" "$dir/rootfs/etc/ssl/certs" \
	"$dir/rootfs/etc/content-cache" "$dir/rootfs/tmp" "$dir/data"
cp "$bin" "$dir/rootfs/usr/local/bin/content-cache"
cp "$cas" "$dir/rootfs/etc/ssl/certs/ca-certificates.crt"
cp "$here/passwd" "$here/group" "$dir/rootfs/etc/"
cp configs/cache.yml "$dir/rootfs/etc/content-cache/config.yml"
chmod 0755 "$dir/rootfs/usr/local/bin/content-cache"
chmod 0644 "$dir/rootfs/etc/ssl/certs/ca-certificates.crt" "$dir/rootfs/etc/passwd" \
	"$dir/rootfs/etc/group" "$dir/rootfs/etc/content-cache/config.yml"
chmod 1777 "$dir/rootfs/tmp"
chmod 0755 "$dir/data"
