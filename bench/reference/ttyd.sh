#!/bin/sh
# Builds ttyd 1.7.7, the reference terminal server bench/terminal.py measures in the same
# rounds as ours (issue 10's targets were set from its figures), from Debian's source
# tarball, and prints the binary's path. Debian 12 does not package ttyd; its build
# dependencies (cmake, libwebsockets, json-c, libuv, zlib, OpenSSL) are in Debian 12 and
# are installed when missing and run as root. Nothing of it reaches the product.
#
#     bench/reference/ttyd.sh [DIR]      (default: .cache/bench; `make bench` runs it)
set -eu
VERSION=1.7.7
SHA256=48eba3f76af237f4c09cceb5ddbe0f845832557819f7e5c60c88285f8822af88
URL="http://deb.debian.org/debian/pool/main/t/ttyd/ttyd_${VERSION}.orig.tar.xz"
dir=${1:-.cache/bench}
src="$dir/ttyd-$VERSION"
bin="$src/build/ttyd"
if [ -x "$bin" ]; then
    echo "$bin"
    exit 0
fi
missing=""
for pkg in cmake gcc make libwebsockets-dev libjson-c-dev libuv1-dev zlib1g-dev libssl-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "ttyd.sh: needs$missing (apt-get install them, or run as root)" >&2
        exit 1
    fi
    # shellcheck disable=SC2086  # a list of package names
    apt-get install -y -qq $missing >&2 || { apt-get update -qq >&2 && apt-get install -y -qq $missing >&2; }
fi
mkdir -p "$dir"
tarball="$dir/ttyd_$VERSION.orig.tar.xz"
if [ ! -f "$tarball" ]; then
    curl -fsSL -o "$tarball.part" "$URL"
    echo "$SHA256  $tarball.part" | sha256sum -c --quiet - >&2
    mv "$tarball.part" "$tarball"
fi
tar -xJf "$tarball" -C "$dir"
cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release >"$dir/ttyd-build.log" 2>&1
cmake --build "$src/build" -j 2 >>"$dir/ttyd-build.log" 2>&1 || {
    tail -20 "$dir/ttyd-build.log" >&2
    exit 1
}
echo "$bin"
